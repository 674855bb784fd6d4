//! The `obscura` command against real node processes on loopback: init, up, index, search, get,
//! a node killed with SIGKILL, and the errors users meet.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{
    get, init_cluster, obscura, obscura_with_password, start, stop_node, testdata, text,
    three_photos,
};

/// `cluster init --storage compact` is written where the data owner's client reads it (the
/// client test `compact_storage_keeps_a_kth_per_node_names_a_bad_piece_and_rebuilds_from_any_k`
/// runs a cluster dealt so); Shamir stays the default, and an unknown scheme is refused before
/// anything is written.
#[test]
fn init_writes_the_storage_scheme_the_owner_shares_with() {
    let scratch = std::env::temp_dir().join(format!("obscura-cli-storage-{}", std::process::id()));
    std::fs::remove_dir_all(&scratch).ok();
    std::fs::create_dir_all(&scratch).unwrap();
    let storage = |dir: &str| -> serde_json::Value {
        let config = std::fs::read(scratch.join(dir).join("client.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&config).unwrap()["storage"].clone()
    };
    for (dir, args) in [
        ("default", &[][..]),
        ("compact", &["--storage", "compact"][..]),
    ] {
        let path = scratch.join(dir);
        let mut argv = vec!["cluster", "init", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        let out = obscura(&argv);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(storage("default"), "shamir");
    assert_eq!(storage("compact"), "compact");
    let bogus = scratch.join("bogus");
    let out = obscura(&[
        "cluster",
        "init",
        bogus.to_str().unwrap(),
        "--storage",
        "short",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("possible values: shamir, compact"),
        "{}",
        text(&out)
    );
    assert!(!bogus.exists());
    std::fs::remove_dir_all(&scratch).ok();
}

#[test]
fn init_up_index_search_get_and_failures() {
    let dir = init_cluster("e2e");
    let cluster = dir.to_str().unwrap();
    // Init refuses to overwrite.
    let again = obscura(&["cluster", "init", cluster]);
    assert!(!again.status.success() && text(&again).contains("already exists"));
    let up = start(&dir);
    // VOPRF tokens by default: three keepers run beside the nodes, and the client holds no key.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("client.json")).unwrap()).unwrap();
    assert_eq!(config["tokens"], "voprf");
    assert_eq!(config["keepers"].as_array().unwrap().len(), 3);
    let status = obscura(&["status", "--cluster", cluster]);
    for j in 1..=3 {
        assert!(
            text(&status).contains(&format!("keeper {j}: up")),
            "{}",
            text(&status)
        );
    }

    // Index the photos folder and one file that is not an image.
    let out = obscura(&[
        "index",
        "--cluster",
        cluster,
        &testdata("photos"),
        &testdata("LICENSES.md"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indexed = v["indexed"].as_array().unwrap();
    assert_eq!(indexed.len(), 15);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    assert!(v["skipped"][0]["error"]
        .as_str()
        .unwrap()
        .contains("not a supported image"));
    let id_of = |name: &str| {
        indexed
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(name))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Search with a JPEG re-encode finds its original first.
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/chelsea.q75.jpg"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["id"], id_of("chelsea.png"));
    // Named by the file it was indexed from, as this client recorded it, owner-only.
    let file = v["results"][0]["file"].as_str().unwrap();
    assert!(
        file.starts_with('/') && file.ends_with("chelsea.png"),
        "{file}"
    );
    let names = dir.join("names.jsonl");
    assert_eq!(
        std::fs::metadata(&names).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for field in ["stage1", "stage2", "total"] {
        assert!(v["timings_ms"][field].as_f64().unwrap() > 0.0);
    }
    assert!(v["bytes"]["sent"].as_u64().unwrap() > 0);
    // The exhaustive scan finds the same, with every indexed image a candidate.
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/chelsea.q75.jpg"),
        "--exhaustive",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w["results"], v["results"]);
    assert!(w["candidates"].as_u64().unwrap() > v["candidates"].as_u64().unwrap());

    // Get is byte-identical.
    let rebuilt = dir.join("rebuilt.png");
    let id = id_of("coffee.png");
    let out = get(cluster, &id, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(testdata("photos/coffee.png")).unwrap()
    );

    // Rotate the token keys in two runs: stopped after one step, searched meanwhile, resumed.
    let search_first = |q: &str| {
        let out = obscura(&["search", "--cluster", cluster, &testdata(q), "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["results"][0]["id"].as_str().unwrap().to_string()
    };
    let rotate = |more: &[&str]| {
        let mut args = vec!["keys", "rotate", "--cluster", cluster, "--batch", "4"];
        args.extend_from_slice(more);
        let out = obscura(&args);
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let said = rotate(&["--max-steps", "1"]);
    assert!(said.contains("stopped after 1 steps"), "{said}");
    assert!(dir.join("rotation.sealed").exists());
    let status = text(&obscura(&["status", "--cluster", cluster]));
    assert!(
        status.contains("node 1: 15 images, 0 pending, key version 1 (moving to 2)")
            && status.contains("keeper 3: up, key versions [1, 2]"),
        "{status}"
    );
    assert_eq!(
        search_first("derived/chelsea.q75.jpg"),
        id_of("chelsea.png")
    );
    let said = rotate(&[]);
    assert!(
        said.contains("resuming") && said.contains("rotated to key version 2"),
        "{said}"
    );
    // The ledger holds the version every party now uses.
    let out = obscura(&["ledger", "show", "--cluster", cluster, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let ledger: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ledger["state"]["key_version"], 2, "{ledger}");
    assert!(!dir.join("rotation.sealed").exists());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("client.json")).unwrap()).unwrap();
    assert_eq!(config["key_version"], 2);
    assert_eq!(search_first("derived/horse.q75.jpg"), id_of("horse.png"));
    let out = obscura(&["status", "--cluster", cluster]);
    assert!(
        out.status.success()
            && text(&out).contains("node 6: 15 images, 0 pending, key version 2\n")
            && text(&out).contains("keeper 1: up, key versions [2]"),
        "{}",
        text(&out)
    );

    querier_with_a_copy_of_the_directory_without_the_owner_key(&dir, &id_of);

    // Node 6 killed: get and search still work (the default cluster has a node to spare).
    stop_node(&dir, 6, "KILL");
    let out = get(cluster, &id, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(search_first("derived/coffee.q75.jpg"), id_of("coffee.png"));
    // Node 5 killed too: search fails at once, naming both.
    stop_node(&dir, 5, "KILL");
    let out = get(cluster, &id, &rebuilt);
    assert!(out.status.success(), "{}", text(&out));
    let t0 = Instant::now();
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/coffee.q75.jpg"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("node 5") && text(&out).contains("node 6"),
        "{}",
        text(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "search hung");

    // Clear errors for bad input.
    let out = obscura(&["get", "--cluster", cluster, "not-an-id", "--out", "/tmp/x"]);
    assert!(!out.status.success() && text(&out).contains("not an image id"));
    // A folder as --out: refused before anything is fetched, nothing left in it.
    let folder = dir.join("client");
    let before = std::fs::read_dir(&folder).unwrap().count();
    let out = obscura(&[
        "get",
        "--cluster",
        cluster,
        &id,
        "--out",
        &format!("{}/", folder.display()),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("is a folder"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), before);
    // Indexing only files that are not images indexes nothing, and says so with its status.
    let out = obscura(&["index", "--cluster", cluster, &testdata("LICENSES.md")]);
    assert!(
        !out.status.success() && text(&out).contains("indexed 0, skipped 1"),
        "{}",
        text(&out)
    );
    let out = obscura(&[
        "get",
        "--cluster",
        "/nonexistent/cluster",
        &id,
        "--out",
        "/tmp/x",
    ]);
    assert!(!out.status.success() && text(&out).contains("cluster init"));
    let out = obscura(&["hash", &testdata("LICENSES.md")]);
    assert!(!out.status.success() && text(&out).contains("not a supported image"));
    let out = obscura(&["hash", &testdata("photos/camera.png")]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0xbff1c1c0434e8cbc  "));

    keeper_accounts_secrets_and_signing(&dir);
    drop(up);
}

/// A querier as a user of the command line meets it: the admin registers her with the querier
/// role and gives her a copy of the cluster directory without `owner/`; she searches, fetches
/// what she found, is refused what she did not find and anything an owner does, and fetches
/// what the owner granted her.
fn querier_with_a_copy_of_the_directory_without_the_owner_key(
    dir: &std::path::Path,
    id_of: &dyn Fn(&str) -> String,
) {
    let cluster = dir.to_str().unwrap();
    let out = obscura_with_password(
        &[
            "register",
            "--cluster",
            cluster,
            "--user",
            "ana",
            "--role",
            "querier",
        ],
        "ana's password",
    );
    assert!(out.status.success(), "{}", text(&out));
    let hers = dir.join("ana");
    std::fs::create_dir_all(hers.join("client")).unwrap();
    // What a user's copy needs: the client's files and the policy servers are appraised under
    // (not the owner key, nor the simulation root).
    for f in [
        "client.json",
        "ca.pem",
        "attestation-policy.json",
        "client/cert.pem",
        "client/secrets.sealed",
        "client/wrapping.key",
    ] {
        std::fs::copy(dir.join(f), hers.join(f)).unwrap();
    }
    let ana = hers.to_str().unwrap();
    let out = obscura_with_password(
        &["login", "--cluster", ana, "--user", "ana"],
        "ana's password",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = obscura(&[
        "search",
        "--cluster",
        ana,
        &testdata("derived/rocket.q75.jpg"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rocket = id_of("rocket.jpg");
    assert_eq!(v["results"][0]["id"], rocket.as_str());
    let got = hers.join("rocket.jpg");
    let out = get(ana, &rocket, &got);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(testdata("photos/rocket.jpg")).unwrap()
    );
    // What she did not find is not hers, and she cannot act as the owner.
    let horse = id_of("horse.png");
    let out = get(ana, &horse, &hers.join("horse.png"));
    assert!(
        !out.status.success() && text(&out).contains("not yours to fetch"),
        "{}",
        text(&out)
    );
    let out = obscura(&["index", "--cluster", ana, &testdata("photos/coffee.png")]);
    assert!(
        !out.status.success() && text(&out).contains("no data-owner key"),
        "{}",
        text(&out)
    );
    let out = obscura(&["audit", "verify", "--cluster", ana]);
    assert!(!out.status.success(), "{}", text(&out));
    // The owner grants her the horse for an hour.
    let out = obscura(&[
        "grant",
        "--cluster",
        cluster,
        "--user",
        "ana",
        &horse,
        "--hours",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let grant = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = obscura(&[
        "get",
        "--cluster",
        ana,
        &horse,
        "--out",
        hers.join("horse.png").to_str().unwrap(),
        "--grant",
        &grant,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(hers.join("horse.png")).unwrap(),
        std::fs::read(testdata("photos/horse.png")).unwrap()
    );
}

/// The keepers as a key server through the command line: the session file, secrets, a
/// threshold signature, the user's trail, a second account, logout, a password change.
fn keeper_accounts_secrets_and_signing(dir: &std::path::Path) {
    let cluster = dir.to_str().unwrap();
    let session = dir.join("session.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the session file is the user's alone");
    }
    let secret_file = dir.join("secret.in");
    std::fs::write(&secret_file, b"an API token 0123456789").unwrap();
    let out = obscura(&[
        "secret",
        "import",
        "--cluster",
        cluster,
        "--name",
        "api",
        secret_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let back = dir.join("secret.out");
    let out = obscura(&[
        "secret",
        "export",
        "--cluster",
        cluster,
        &id,
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), b"an API token 0123456789");
    let out = obscura(&[
        "secret",
        "generate",
        "--cluster",
        cluster,
        "--name",
        "release",
        "--signing",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let out = obscura(&[
        "sign",
        "--cluster",
        cluster,
        "--key",
        &key,
        &secret_file.to_string_lossy(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let public: [u8; 32] = unhex(v["public_key"].as_str().unwrap()).try_into().unwrap();
    let signature: [u8; 64] = unhex(v["signature"].as_str().unwrap()).try_into().unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify_strict(
            b"an API token 0123456789",
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .unwrap();
    let out = obscura(&["secret", "list", "--cluster", cluster, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["secrets"].as_array().unwrap().len(), 2);
    let out = obscura(&["audit", "events", "--cluster", cluster]);
    let trail = text(&out);
    for action in [
        "login",
        "secret import",
        "secret export",
        "signing key generate",
        "sign",
    ] {
        assert!(trail.contains(action), "{action}: {trail}");
    }
    let out = obscura(&["secret", "delete", "--cluster", cluster, &id]);
    assert!(out.status.success(), "{}", text(&out));
    // The admin registers a second account; a wrong password is refused.
    let out = obscura_with_password(
        &["register", "--cluster", cluster, "--user", "bob"],
        "bob pw",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = obscura(&["logout", "--cluster", cluster]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!session.exists());
    let out = obscura(&["secret", "list", "--cluster", cluster]);
    assert!(
        !out.status.success() && text(&out).contains("not logged in"),
        "{}",
        text(&out)
    );
    let out = obscura_with_password(&["login", "--cluster", cluster, "--user", "bob"], "wrong");
    assert!(
        !out.status.success() && text(&out).contains("login failed"),
        "{}",
        text(&out)
    );
    let out = obscura_with_password(&["login", "--cluster", cluster, "--user", "bob"], "bob pw");
    assert!(out.status.success(), "{}", text(&out));
    // Bob changes his password (current, then new, on standard input).
    let out = obscura_with_password(
        &["passwd", "--cluster", cluster, "--user", "bob"],
        "bob pw\nbob's new pw",
    );
    assert!(
        out.status.success() && text(&out).contains("keepers [1, 2, 3] took the new password"),
        "{}",
        text(&out)
    );
    let out = obscura_with_password(&["login", "--cluster", cluster, "--user", "bob"], "bob pw");
    assert!(!out.status.success(), "{}", text(&out));
    let out = obscura_with_password(
        &["login", "--cluster", cluster, "--user", "bob"],
        "bob's new pw",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/coffee.q75.jpg"),
    ]);
    // Nodes 5 and 6 are down, so the search fails at the nodes, past the keepers.
    assert!(text(&out).contains("node 5"), "{}", text(&out));
}

#[test]
fn the_demo_passes_on_three_photos_and_cleans_up() {
    let photos = three_photos("demo");
    let out = obscura(&["demo", "--json", "--photos", photos.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        (v["photos"].as_u64(), v["queries"].as_u64()),
        (Some(3), Some(12))
    );
    assert_eq!(v["recall_at_1"], 1.0, "{v}");
    assert_eq!(v["rebuild"]["identical"], true);
    assert!(v["checks"].as_object().unwrap().values().all(|c| c == true));
    assert!(v["index"]["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["total"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v.get("kept").is_none());

    // A photos folder that does not exist: a clear error, non-zero exit.
    let out = obscura(&["demo", "--photos", "/no/such/folder"]);
    assert!(!out.status.success() && text(&out).contains("not a folder"));
    std::fs::remove_dir_all(&photos).ok();
}

/// `obscura hash … | head -0`: the reader is gone before anything is printed. The command ends
/// quietly with the status a closed pipe gives (141), not with a panic report.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = std::process::Command::new(common::BIN)
        .args(["hash", &testdata("photos/camera.png")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// Completion scripts for the shells people use, each naming the subcommands; a shell clap
/// does not know is refused.
#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, mark) in [
        ("bash", "_obscura()"),
        ("zsh", "#compdef obscura"),
        ("fish", "complete -c obscura"),
    ] {
        let out = obscura(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(mark), "{shell}");
        assert!(
            script.contains("search") && script.contains("index"),
            "{shell}"
        );
    }
    assert!(!obscura(&["completions", "tcsh"]).status.success());
}

/// `--cluster` left out: the directory comes from OBSCURA_CLUSTER, else from the user's
/// configuration file; a file that does not parse is named, not ignored.
#[test]
fn the_cluster_may_come_from_the_environment_or_the_configuration_file() {
    let dir = init_cluster("config");
    let config = dir.join("user-config.toml");
    let run = |env: &[(&str, &std::ffi::OsStr)], args: &[&str]| {
        let mut c = std::process::Command::new(common::BIN);
        c.args(args).env_remove("OBSCURA_CLUSTER");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let named = run(&[], &["status", "--cluster", dir.to_str().unwrap()]);
    let missing = run(
        &[("OBSCURA_CONFIG", dir.join("none.toml").as_os_str())],
        &["status"],
    );
    assert!(!missing.status.success());
    assert!(text(&missing).contains("--cluster"), "{}", text(&missing));

    std::fs::write(&config, format!("cluster = {:?}\n", dir.to_str().unwrap())).unwrap();
    let from_file = run(&[("OBSCURA_CONFIG", config.as_os_str())], &["status"]);
    assert_eq!(from_file.stdout, named.stdout, "{}", text(&from_file));
    assert_eq!(from_file.status.code(), named.status.code());

    // The environment wins over the file.
    let elsewhere = dir.join("not-a-cluster");
    let from_env = run(
        &[
            ("OBSCURA_CONFIG", config.as_os_str()),
            ("OBSCURA_CLUSTER", elsewhere.as_os_str()),
        ],
        &["status"],
    );
    assert!(!from_env.status.success());
    assert!(
        text(&from_env).contains("not-a-cluster"),
        "{}",
        text(&from_env)
    );

    std::fs::write(&config, "clutser = \"/x\"\n").unwrap();
    let bad = run(&[("OBSCURA_CONFIG", config.as_os_str())], &["status"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("user-config.toml") && text(&bad).contains("clutser"),
        "{}",
        text(&bad)
    );
    std::fs::remove_dir_all(&dir).ok();
}
