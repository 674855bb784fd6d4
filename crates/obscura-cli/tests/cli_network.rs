//! Network faults between the client and the servers, through a fault-injecting TCP proxy in
//! front of some nodes and keepers (this kernel has no `tc netem`, and TLS passes through a TCP
//! proxy untouched: clients check party names, not addresses). Partitions that swallow every
//! byte, refused connections, added latency and connections reset at random: every command
//! succeeds or fails within its time limit, names the party, and leaves nothing half-done.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{index_one, init_cluster, obscura, start, status, testdata, text, NODES};

/// What the proxy does with each new connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Pass bytes both ways.
    Pass,
    /// Pass bytes both ways, each chunk held back this long.
    Delay(Duration),
    /// Accept, read everything, answer nothing: a partition the handshake does not see.
    Swallow,
    /// Close at once: a host that refuses.
    Refuse,
    /// Close at once one connection in two, pass the others.
    Flaky,
}

/// A TCP proxy to `upstream` on its own thread, whose fault can be changed while it runs.
struct Proxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let f = fault.clone();
        runtime.spawn(async move {
            let mut n = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                n += 1;
                let fault = *f.lock().unwrap();
                tokio::spawn(serve(client, upstream, fault, n));
            }
        });
        Proxy {
            addr,
            fault,
            _runtime: runtime,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

async fn serve(mut client: tokio::net::TcpStream, upstream: SocketAddr, fault: Fault, n: u64) {
    use tokio::io::AsyncReadExt;
    let delay = match fault {
        Fault::Refuse => return,
        Fault::Flaky if n.is_multiple_of(2) => return,
        Fault::Swallow => {
            let mut sink = [0u8; 4096];
            while matches!(client.read(&mut sink).await, Ok(1..)) {}
            return;
        }
        Fault::Delay(d) => d,
        Fault::Pass | Fault::Flaky => Duration::ZERO,
    };
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move { pipe(&mut cr, &mut sw, delay).await });
    pipe(&mut sr, &mut cw, delay).await;
    up.abort();
}

async fn pipe(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Put a proxy in front of the client's view of `party` ("nodes" or "keepers", 1-based), and
/// set the client's time limit per call to `timeout_ms`.
fn proxy(dir: &Path, party: &str, x: usize) -> Proxy {
    let path = dir.join("client.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let url = config[party][x - 1].as_str().unwrap().to_string();
    let upstream: SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let p = Proxy::start(upstream);
    config[party][x - 1] = format!("https://{}", p.addr).into();
    config["timeout_ms"] = 3000.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    p
}

/// Run `obscura ARGS`, which must end within `limit`; its output and whether it succeeded.
fn timed(args: &[&str], limit: Duration) -> (bool, String) {
    let t = Instant::now();
    let out = obscura(args);
    let took = t.elapsed();
    assert!(took < limit, "{args:?} took {took:?}: {}", text(&out));
    (out.status.success(), text(&out))
}

#[test]
fn network_faults_end_within_the_time_limit_name_the_party_and_leave_nothing_half_done() {
    let dir = init_cluster("network");
    let cluster = dir.to_str().unwrap();
    let node3 = proxy(&dir, "nodes", 3);
    let node4 = proxy(&dir, "nodes", 4);
    let keeper2 = proxy(&dir, "keepers", 2);
    let up = start(&dir);
    let first = index_one(cluster, &testdata("photos/camera.png"));
    let limit = Duration::from_secs(12); // one 3 s time limit per step, and then some
    let search = [
        "search",
        "--cluster",
        cluster,
        &testdata("derived/camera.q75.jpg"),
    ];
    let rebuilt = dir.join("camera.png");
    let get = [
        "get",
        "--cluster",
        cluster,
        &first,
        "--out",
        rebuilt.to_str().unwrap(),
    ];
    let coffee = testdata("photos/coffee.png");
    let index = ["index", "--cluster", cluster, &coffee];

    // Node 3 partitioned: every byte swallowed. Search and get go on without it, naming it;
    // indexing needs every node and fails, naming it, within the limit.
    node3.set(Fault::Swallow);
    let (ok, said) = timed(&search, limit);
    assert!(ok && said.contains(&first), "{said}");
    let (ok, said) = timed(&get, limit);
    assert!(ok, "{said}");
    let (ok, said) = timed(&index, limit);
    assert!(!ok && said.contains("node 3"), "{said}");

    // Node 3 refuses connections: the same, at once.
    node3.set(Fault::Refuse);
    let (ok, said) = timed(&index, Duration::from_secs(5));
    assert!(
        !ok && said.contains("node 3") && said.contains("unreachable"),
        "{said}"
    );
    let (ok, said) = timed(&search, limit);
    assert!(ok && said.contains(&first), "{said}");

    // Node 3 back, node 4 and keeper 2 slow (150 ms a chunk): everything works, slower.
    node3.set(Fault::Pass);
    node4.set(Fault::Delay(Duration::from_millis(150)));
    keeper2.set(Fault::Delay(Duration::from_millis(150)));
    let (ok, said) = timed(&index, Duration::from_secs(30));
    assert!(ok, "{said}");
    let (ok, said) = timed(&search, Duration::from_secs(30));
    assert!(ok && said.contains(&first), "{said}");
    node4.set(Fault::Pass);

    // Keeper 2 partitioned: tokens come from keepers 1 and 3 (any 2 of 3).
    keeper2.set(Fault::Swallow);
    for _ in 0..2 {
        let (ok, said) = timed(&search, limit);
        assert!(ok && said.contains(&first), "{said}");
    }
    keeper2.set(Fault::Pass);

    // Node 4 resets every other connection: each search succeeds or fails naming node 4.
    node4.set(Fault::Flaky);
    for _ in 0..4 {
        let (ok, said) = timed(&search, limit);
        assert!(ok || said.contains("node 4"), "{said}");
    }
    node4.set(Fault::Pass);

    // Nothing half-done: the next index cleans up what the failed ones left, and every node
    // then holds the same images, none pending.
    let (ok, said) = timed(&index, limit);
    assert!(ok, "{said}");
    let held = status(&dir);
    assert_eq!(held.len(), NODES);
    assert!(
        held.iter().all(|&(c, p)| c == held[0].0 && p == 0),
        "{held:?}"
    );
    let (ok, said) = timed(&["audit", "verify", "--cluster", cluster], limit);
    assert!(ok, "{said}");
    drop(up);
}

#[test]
fn a_group_change_of_unclear_outcome_is_settled_against_the_ledger_merged_or_dropped() {
    let dir = init_cluster("group-unclear");
    let cluster = dir.to_str().unwrap();
    let proxies: Vec<Proxy> = (1..=NODES).map(|x| proxy(&dir, "nodes", x)).collect();
    let _up = start(&dir);
    let states = dir.join("states");
    std::fs::create_dir_all(&states).unwrap();
    let (owner, ana) = (states.join("owner.json"), states.join("ana.json"));
    let run = common::as_member_command;
    // Whether the owner's state holds a change sent to the ledger and not settled: the test
    // opens it as the client does, under its wrapping key.
    let config = obscura_client::config::read_config(&dir).unwrap();
    let key = obscura_client::config::wrapping_key(&dir, &config).unwrap();
    let staged = |path: &Path| {
        std::fs::read(path).ok().and_then(|b| {
            obscura_client::group::open_state(&b, &key)
                .ok()
                .map(|(s, _)| s.pending().is_some())
        }) == Some(true)
    };
    let kp = dir.join("ana.kp");
    let out = run(
        &ana,
        &[
            "ledger",
            "key-package",
            "--cluster",
            cluster,
            "--name",
            "ana",
            "--out",
            kp.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The owner's group, at epoch 0.
    let out = run(&owner, &["ledger", "members", "--cluster", cluster])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // The owner's `add-member` of ana, every node slowed, running until its change is staged.
    let add_until_staged = || {
        for p in &proxies {
            p.set(Fault::Delay(Duration::from_millis(150)));
        }
        let child = run(
            &owner,
            &[
                "ledger",
                "add-member",
                "--cluster",
                cluster,
                "--key-package",
                kp.to_str().unwrap(),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !staged(&owner) {
            assert!(Instant::now() < deadline, "the change was never staged");
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    };

    // Every node frozen (SIGSTOP) once the owner's client has staged the change and checked
    // its state against the ledger: the change cannot go in and stays staged; the next
    // command, the nodes back, finds it nowhere in a history a majority cosigned past its
    // place (an entry of the owner's appended to make sure) and drops it.
    let signal = |sig: &str| {
        for x in 1..=NODES as u8 {
            std::process::Command::new("pkill")
                .args([sig, "-f", &common::node_pattern(&dir, x)])
                .status()
                .unwrap();
        }
    };
    let child = add_until_staged();
    signal("-STOP");
    let out = child.wait_with_output().unwrap();
    signal("-CONT");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(staged(&owner));
    for p in &proxies {
        p.set(Fault::Pass);
    }
    let out = run(
        &owner,
        &["ledger", "members", "--cluster", cluster, "--json"],
    )
    .output()
    .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(
        (m["epoch"].as_u64(), m["members"].as_array().map(Vec::len)),
        (Some(0), Some(1)),
        "{m}"
    );
    let shown: serde_json::Value = serde_json::from_slice(
        &obscura(&["ledger", "show", "--cluster", cluster, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(shown["entries"][0]["transition"], "synced", "{shown}");

    // Every node slow: the append takes seconds. Once the owner's client has saved its staged
    // change, its state file is made unwritable (a folder in its place, which stops root as
    // well): the ledger takes the change, the client fails to keep its merge.
    let child = add_until_staged();
    let aside = states.join("owner.json.aside");
    std::fs::rename(&owner, &aside).unwrap();
    std::fs::create_dir_all(owner.join("in-the-way")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(&owner).unwrap();
    std::fs::rename(&aside, &owner).unwrap();
    for p in &proxies {
        p.set(Fault::Pass);
    }
    let shown: serde_json::Value = serde_json::from_slice(
        &obscura(&["ledger", "show", "--cluster", cluster, "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(shown["entries"][1]["transition"], "group commit", "{shown}");

    // The next command settles it against the ledger: merged, and the group goes on.
    let out = run(
        &owner,
        &["ledger", "members", "--cluster", cluster, "--json"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["epoch"], 1, "{m}");
    assert_eq!(m["members"].as_array().unwrap().len(), 2, "{m}");
    let photo = testdata("photos/camera.png");
    let out = run(
        &owner,
        &[
            "index",
            "--cluster",
            cluster,
            &photo,
            "--label",
            "after the fault",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &ana,
        &[
            "search",
            "--cluster",
            cluster,
            &testdata("derived/camera.q75.jpg"),
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["results"][0]["label"], "after the fault", "{found}");
}
