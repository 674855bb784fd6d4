//! The clean room on real processes: a cluster, a worker of this build and one of another, and
//! the controller (`obscura room run`) talking to the worker through a proxy that keeps every
//! byte it relays (the nodes' releases and the result). The owner approves a function once; every node appraises the worker and releases
//! its shares sealed to it; a node with a damaged share is named and the run completes; only
//! the recipient opens the output; the controller's traffic holds none of the images nor the
//! output; runs past the approval's count, a worker of another build, and hostile functions are
//! each refused with their reason, and the worker stays up.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;

/// A TCP proxy on loopback to `port` that keeps everything passing through it, both ways.
fn capturing_proxy(port: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (at, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Make, then approve, a work of `module` over `ids` for `recipient`; returns (work, approval).
fn approved_work(
    dir: &Path,
    name: &str,
    module: &str,
    ids: &[String],
    recipient: &str,
    max_runs: u32,
) -> (String, String) {
    let cluster = dir.to_str().unwrap();
    let inputs: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({ "image": id }))
        .collect();
    let manifest = serde_json::json!({
        "inputs": inputs,
        "output": {"kind": "json", "max_bytes": 4096},
        "limits": {"fuel": 200_000_000u64, "memory_bytes": 64u64 << 20},
        "recipients": [recipient],
    });
    let manifest_path = dir.join(format!("{name}.manifest.json"));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let work = dir.join(format!("{name}.work.json"));
    let out = obscura(&[
        "room",
        "work",
        "--module",
        module,
        "--manifest",
        manifest_path.to_str().unwrap(),
        "--out",
        work.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let approval = dir.join(format!("{name}.approval.json"));
    let out = obscura(&[
        "room",
        "approve",
        "--cluster",
        cluster,
        "--work",
        work.to_str().unwrap(),
        "--max-runs",
        &max_runs.to_string(),
        "--out",
        approval.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    (
        work.to_str().unwrap().to_owned(),
        approval.to_str().unwrap().to_owned(),
    )
}

fn room_run(
    cluster: &str,
    work: &str,
    approval: &str,
    worker: u16,
    out: &Path,
) -> std::process::Output {
    obscura(&[
        "room",
        "run",
        "--cluster",
        cluster,
        "--work",
        work,
        "--approval",
        approval,
        "--worker",
        &format!("http://127.0.0.1:{worker}"),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// The processes whose parent is `parent` (from `/proc/*/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // pid (comm) state ppid ...: comm may hold spaces, so read after its ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn example(name: &str) -> String {
    format!("{}/../../examples/room/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_clean_room_run_reaches_only_its_recipient_names_a_lying_node_and_keeps_to_its_approval() {
    let dir = init_cluster("room");
    let cluster = dir.to_str().unwrap();
    let mut up = start(&dir);
    let photos = ["camera.png", "coffee.png", "rocket.jpg"];
    let ids: Vec<String> = photos
        .iter()
        .map(|p| index_one(cluster, &testdata(&format!("photos/{p}"))))
        .collect();

    // Node 4's share of the coffee photo is damaged on disk (kept first, to look for it in
    // what the controller relays).
    stop_node(&dir, 4, "TERM");
    let share = {
        use redb::ReadableDatabase;
        let db = redb::Database::open(dir.join("node4").join("store.redb")).unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("image_shares");
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(def).unwrap();
        let id = hex_id(&ids[1]);
        let value = table.get(id.as_slice()).unwrap().unwrap().value().to_vec();
        value
    };
    flip_byte(&dir, 4, "image_shares", &hex_id(&ids[1]), 1000);
    up.restart_node(4);
    wait_for_status(&dir);

    let port = free_ports(2);
    let mut good = worker(Path::new(BIN), &dir, "good", port);
    let modified = modified_build("room-worker");
    let mut other = worker(&modified, &dir, "other", port + 1);
    let (proxy, seen) = capturing_proxy(port);

    let key = dir.join("recipient.key");
    let out = obscura(&["room", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let recipient = text(&out).trim().to_owned();
    let (work, approval) = approved_work(
        &dir,
        "stats",
        &example("colour_stats.wat"),
        &ids,
        &recipient,
        1,
    );

    // The run: k + 1 = 4 nodes release (nodes 1 to 4), node 4 is named, the result is the
    // recipient's alone.
    let result = dir.join("result.json");
    let out = room_run(cluster, &work, &approval, proxy, &result);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["released_by"].as_array().unwrap().len(),
        4,
        "{report}"
    );
    // Every node that released entered the signed result in its audit log.
    assert_eq!(
        report["entered_at"],
        serde_json::json!([1, 2, 3, 4]),
        "{report}"
    );
    let blamed = report["blamed"].as_array().unwrap();
    assert_eq!(blamed.len(), 1, "{report}");
    assert_eq!(blamed[0]["node"], 4, "{report}");
    assert!(
        blamed[0]["why"]
            .as_str()
            .unwrap()
            .contains("node 4 share failed its digest"),
        "{report}"
    );
    let output = dir.join("stats.json");
    let out = obscura(&[
        "room",
        "open",
        "--result",
        result.to_str().unwrap(),
        "--cluster",
        cluster,
        "--key",
        key.to_str().unwrap(),
        "--out",
        output.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let opened: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        opened["released_by"],
        serde_json::json!([1, 2, 3, 4]),
        "{opened}"
    );
    let output_bytes = std::fs::read(&output).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&output_bytes).unwrap();
    assert_eq!(stats[0]["width"], 512);
    assert_eq!(stats[1]["width"], 600);
    assert_eq!(stats[1]["height"], 400);
    let grey = &stats[0]["mean"];
    assert!(grey[0] == grey[1] && grey[1] == grey[2], "{stats}");
    // Another key opens nothing.
    let stranger = dir.join("stranger.key");
    assert!(
        obscura(&["room", "keygen", "--out", stranger.to_str().unwrap()])
            .status
            .success()
    );
    let out = obscura(&[
        "room",
        "open",
        "--result",
        result.to_str().unwrap(),
        "--cluster",
        cluster,
        "--key",
        stranger.to_str().unwrap(),
        "--out",
        "-",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no output in this result is sealed to this key"),
        "{}",
        text(&out)
    );
    // A result of another work is refused when the recipient names the one it expects.
    let out = obscura(&[
        "room",
        "open",
        "--result",
        result.to_str().unwrap(),
        "--cluster",
        cluster,
        "--work",
        &"ab".repeat(32),
        "--key",
        key.to_str().unwrap(),
        "--out",
        "-",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("a result of work"), "{}", text(&out));

    // Everything the controller sent the worker and got back: no piece of any photo, and not
    // the output.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > 100_000,
        "only {} bytes went through",
        seen.len()
    );
    for p in photos {
        let photo = std::fs::read(testdata(&format!("photos/{p}"))).unwrap();
        for window in photo.chunks(4096).map(|c| &c[..c.len().min(48)]) {
            assert!(
                !contains(&seen, window),
                "a piece of {p} passed the controller"
            );
        }
    }
    assert!(!contains(
        &seen,
        &output_bytes[..output_bytes.len().min(64)]
    ));
    for window in share.chunks(4096).map(|c| &c[..c.len().min(48)]) {
        assert!(
            !contains(&seen, window),
            "a piece of node 4's share passed the controller"
        );
    }

    // The approval allows one run at each node: the four that released refuse a second, and
    // the two left (which release now) are fewer than k, so nothing runs.
    let out = room_run(cluster, &work, &approval, port, &dir.join("again.json"));
    assert!(!out.status.success());
    assert_eq!(
        text(&out).matches("runs its approval allows").count(),
        4,
        "{}",
        text(&out)
    );
    assert!(!dir.join("again.json").exists());

    // A worker of another build is refused by every node, naming its measurement.
    let (work2, approval2) = approved_work(
        &dir,
        "labels",
        &example("label_counts.wat"),
        &ids,
        &recipient,
        1,
    );
    let out = room_run(
        cluster,
        &work2,
        &approval2,
        port + 1,
        &dir.join("other.json"),
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out).matches("refuses the worker for work").count(),
        NODES,
        "{}",
        text(&out)
    );
    assert!(!dir.join("other.json").exists());

    // The resident attester checks each job it starts by local attestation: its host swaps
    // the executable jobs are started from for another build, and the load is refused, naming
    // the measurement, before any node is asked.
    let swapped = modified.with_extension("swapped");
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.extend_from_slice(&[1, 2]);
    std::fs::write(&swapped, bytes).unwrap();
    std::fs::set_permissions(
        &swapped,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::rename(&swapped, &modified).unwrap();
    let out = room_run(
        cluster,
        &work2,
        &approval2,
        port + 1,
        &dir.join("other.json"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("local attestation of the job: the job's measurement"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("refuses the worker"), "{}", text(&out));

    // Anyone on the worker's port: a load with an approval that is not the owner's is refused
    // before anything compiles; a job's evidence and run need its loader's token.
    let work_text = std::fs::read_to_string(&work2).unwrap();
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&approval2).unwrap()).unwrap();
    forged["max_runs"] = serde_json::json!(100);
    let load = |approval: &serde_json::Value| {
        serde_json::json!({"work": work_text, "approval": approval}).to_string()
    };
    let (status, said) = post_worker(port, "/v1/room/load", &[], &load(&forged));
    assert_eq!(status, 403, "{said}");
    assert!(said.contains("not the data owner's"), "{said}");
    let genuine: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&approval2).unwrap()).unwrap();
    let (status, said) = post_worker(port, "/v1/room/load", &[], &load(&genuine));
    assert_eq!(status, 200, "{said}");
    let loaded: serde_json::Value = serde_json::from_str(&said).unwrap();
    let job = loaded["party_key"].as_str().unwrap();
    let wrong = "00".repeat(32);
    let asked = serde_json::json!({"job": job, "token": wrong, "nonce": "11".repeat(32)});
    assert_eq!(
        post_status(port, "/v1/room/evidence", &asked.to_string()),
        404
    );
    let (status, _) = post_worker(
        port,
        "/v1/room/run",
        &[("x-obscura-job", job), ("x-obscura-token", &wrong)],
        "",
    );
    assert_eq!(status, 404);

    // A hostile function is stopped by its fuel, with the reason; the worker stays up and runs
    // the next work.
    let (endless, endless_approval) = approved_work(
        &dir,
        "endless",
        &example("hostile/endless_loop.wat"),
        &ids,
        &recipient,
        1,
    );
    let out = room_run(
        cluster,
        &endless,
        &endless_approval,
        port,
        &dir.join("endless.json"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("ran out of fuel"), "{}", text(&out));
    let out = room_run(cluster, &work2, &approval2, port, &dir.join("labels.json"));
    assert!(out.status.success(), "{}", text(&out));

    // A function importing what it may not is refused before anyone is asked to approve it.
    let manifest = dir.join("stats.manifest.json");
    let out = obscura(&[
        "room",
        "work",
        "--module",
        &example("hostile/forbidden_import.wat"),
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        dir.join("bad.work.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("imports wasi_snapshot_preview1.fd_write"),
        "{}",
        text(&out)
    );

    // Inputs from a search: the matches of a re-encoded coffee photo are the coffee photo
    // alone; a manifest that names inputs as well is refused, as is a search with no match.
    let open_manifest = dir.join("open.manifest.json");
    std::fs::write(
        &open_manifest,
        serde_json::json!({
            "output": {"kind": "json", "max_bytes": 4096},
            "limits": {"fuel": 200_000_000u64, "memory_bytes": 64u64 << 20},
            "recipients": [recipient],
        })
        .to_string(),
    )
    .unwrap();
    let by_search = |manifest: &Path, query: &str, within: &str| {
        obscura(&[
            "room",
            "work",
            "--module",
            &example("colour_stats.wat"),
            "--manifest",
            manifest.to_str().unwrap(),
            "--matches",
            &testdata(query),
            "--within",
            within,
            "--cluster",
            cluster,
            "--out",
            dir.join(format!("search-{within}.work.json"))
                .to_str()
                .unwrap(),
            "--json",
        ])
    };
    let out = by_search(&open_manifest, "derived/coffee.q75.jpg", "10");
    assert!(out.status.success(), "{}", text(&out));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["inputs"], serde_json::json!([ids[1]]), "{made}");
    let out = by_search(&manifest, "derived/coffee.q75.jpg", "9");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("names inputs and --matches"),
        "{}",
        text(&out)
    );
    let out = by_search(&open_manifest, "photos/chelsea.png", "0");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no stored image within distance 0"),
        "{}",
        text(&out)
    );

    // Anyone with an approval loads jobs until the worker is full: at most eight job
    // processes live at once, and they go with the worker.
    let mut loaded = 0;
    let refused = loop {
        let (status, said) = post_worker(port, "/v1/room/load", &[], &load(&genuine));
        if status != 200 {
            break (status, said);
        }
        loaded += 1;
        assert!(loaded <= 8, "a ninth job was loaded");
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert!(refused.1.contains("holds 8 jobs"), "{}", refused.1);
    let jobs = children_of(good.id());
    assert_eq!(jobs.len(), 8, "{jobs:?}");
    let _ = good.kill();
    let _ = good.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while jobs.iter().any(|pid| alive(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "job processes outlived their worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    for child in [&mut good, &mut other] {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::fs::remove_file(&modified).ok();
    drop(up);
}
