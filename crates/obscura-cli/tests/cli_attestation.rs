//! Attestation in a running cluster: every node and keeper is appraised under the cluster's
//! policy before a client sends it anything, and a server running a modified build — the
//! cheapest attack of an operator who wants the shares its node sees — is refused, named, and
//! not used, while the others serve searches and rebuild images.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

/// A copy of the `obscura` executable with one byte more: another build, as far as a
/// measurement can tell.
fn modified_build(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("obscura-modified-{name}-{}", std::process::id()));
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_node_running_a_modified_build_is_refused_named_and_not_used() {
    let dir = init_cluster("attest");
    let cluster = dir.to_str().unwrap();
    let up = start(&dir);
    let status = obscura(&["status", "--cluster", cluster]);
    assert!(status.status.success(), "{}", text(&status));
    let said = text(&status);
    assert!(said.contains("SIMULATION ALLOWED"), "{said}");
    assert_eq!(
        said.matches(": attested, simulation measurement").count(),
        NODES + 3,
        "{said}"
    );

    let id = index_one(cluster, &testdata("photos/coffee.png"));

    // Node 3's operator swaps in another build, same configuration and secrets.
    stop_node(&dir, 3, "TERM");
    let modified = modified_build("node3");
    let mut impostor = Command::new(&modified)
        .args(["node", "run"])
        .arg(dir.join("node3").join("node.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));

    let status = obscura(&["status", "--cluster", cluster]);
    assert!(!status.status.success(), "{}", text(&status));
    let said = text(&status);
    assert!(
        said.contains(
            "node 3 (misbehaved): not used: refused by the attestation policy: measurement"
        ) && said.contains("is not allowed for role node on simulation"),
        "{said}"
    );
    assert_eq!(
        said.matches(": attested, ").count(),
        NODES + 3 - 1,
        "{said}"
    );

    // Searches and rebuilds go on without it, and name it.
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("photos/coffee.png"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("{id}  distance 0")), "{said}");
    assert!(
        said.contains("node 3 (misbehaved): refused by the attestation policy"),
        "{said}"
    );
    let rebuilt = dir.join("coffee.png");
    let out = get(cluster, &id, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(testdata("photos/coffee.png")).unwrap()
    );

    // Indexing needs every node: it is refused, naming node 3.
    let out = obscura(&[
        "index",
        "--cluster",
        cluster,
        &testdata("photos/rocket.jpg"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("misbehaved: node 3"), "{}", text(&out));

    let _ = impostor.kill();
    let _ = impostor.wait();
    std::fs::remove_file(&modified).ok();
    drop(up);
}

#[test]
fn a_policy_that_refuses_simulation_refuses_every_server_and_a_missing_one_fails_closed() {
    let dir = init_cluster("attest-production");
    let cluster = dir.to_str().unwrap();
    let up = start(&dir);
    // The operator switches to a production policy: simulation refused.
    let path = dir.join("attestation-policy.json");
    let mut policy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    policy["allow_simulation"] = serde_json::Value::Bool(false);
    policy["version"] = serde_json::json!(2);
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();

    let out = obscura(&["status", "--cluster", cluster]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("version 2"), "{said}");
    assert_eq!(
        said.matches("not used: refused by the attestation policy: simulated evidence")
            .count(),
        NODES + 3,
        "{said}"
    );
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("photos/coffee.png"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));

    // Without the policy file, a client of this cluster does not fall back to trusting every
    // server: it does not start.
    std::fs::remove_file(&path).unwrap();
    let out = obscura(&["status", "--cluster", cluster]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("client.json requires attestation"),
        "{}",
        text(&out)
    );
    drop(up);
}
