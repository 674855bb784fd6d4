//! Helpers for driving the `obscura` binary and its node processes.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_obscura");

pub fn obscura(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `obscura ARGS` as the client whose group state is `state` (`OBSCURA_GROUP`), to run or
/// spawn.
pub fn as_member_command(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("OBSCURA_GROUP", state);
    c
}

/// `obscura ARGS` as the client whose group state is `state`.
pub fn as_member(state: &Path, args: &[&str]) -> Output {
    as_member_command(state, args).output().unwrap()
}

/// The password the tests' admin account has.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// `obscura ARGS` with `password` on standard input.
pub fn obscura_with_password(args: &[&str], password: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Register the cluster's first account (its admin, with the bootstrap code) and log in.
pub fn register_and_login(dir: &Path) {
    let cluster = dir.to_str().unwrap();
    for args in [
        ["register", "--cluster", cluster, "--user", "admin"],
        ["login", "--cluster", cluster, "--user", "admin"],
    ] {
        let out = obscura_with_password(&args, ADMIN_PASSWORD);
        assert!(out.status.success(), "{}", text(&out));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `obscura get --cluster DIR ID --out OUT`.
pub fn get(cluster: &str, id: &str, out: &Path) -> Output {
    obscura(&[
        "get",
        "--cluster",
        cluster,
        id,
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Index one file, which must succeed; returns its id.
pub fn index_one(cluster: &str, file: &str) -> String {
    let out = obscura(&["index", "--cluster", cluster, file, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["indexed"][0]["id"].as_str().unwrap().to_string()
}

pub fn testdata(p: &str) -> String {
    format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// A base port with `n` consecutive free ports after it. Tests of one binary run in parallel,
/// so the search starts at a different place for each call.
pub fn free_ports(n: u16) -> u16 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = (nanos ^ std::process::id() ^ call.wrapping_mul(7919)) % 40_000;
    (0..2000u32)
        .map(|i| ((start + i * 61) % 40_000 + 20_000) as u16)
        .find(|&base| (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("free ports")
}

/// Nodes of a cluster `obscura cluster init` makes by default.
pub const NODES: usize = 6;

/// `obscura cluster init` of a fresh cluster of the default shape (3-of-6) in the temporary
/// folder.
pub fn init_cluster(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("obscura-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    // 6 nodes, then 3 keepers.
    let base = free_ports(NODES as u16 + 3);
    let (base, keeper_base) = (base.to_string(), (base + NODES as u16).to_string());
    let init = obscura(&[
        "cluster",
        "init",
        dir.to_str().unwrap(),
        "--base-port",
        &base,
        "--keeper-base-port",
        &keeper_base,
    ]);
    assert!(init.status.success(), "{}", text(&init));
    assert!(
        text(&init).contains(
            "(3-of-6): any 2 nodes together learn nothing; searches go on with 1 node down"
        ),
        "{}",
        text(&init)
    );
    dir
}

/// The `pkill -f` pattern of node `node`'s process.
pub fn node_pattern(dir: &Path, node: u8) -> String {
    format!(
        "node run {}",
        dir.join(format!("node{node}")).join("node.json").display()
    )
}

/// Stop node `node` with `signal` ("TERM" or "KILL") and wait until its process is gone.
pub fn stop_node(dir: &Path, node: u8, signal: &str) {
    stop_matching(&node_pattern(dir, node), signal);
}

/// Stop keeper `keeper` with `signal` and wait until its process is gone.
pub fn stop_keeper(dir: &Path, keeper: u8, signal: &str) {
    stop_matching(
        &format!(
            "keeper run {}",
            dir.join(format!("keeper{keeper}"))
                .join("keeper.json")
                .display()
        ),
        signal,
    );
}

fn stop_matching(pattern: &str, signal: &str) {
    assert!(Command::new("pkill")
        .args([&format!("-{signal}"), "-f", pattern])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while Command::new("pgrep")
        .args(["-f", pattern])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "{pattern} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every node and keeper answers `obscura status` and passes its appraisal (keepers
/// may still be waiting for their token-key shares).
pub fn wait_for_status(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let cluster = dir.to_str().unwrap();
    let answers = || {
        let out = obscura(&["status", "--cluster", cluster, "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        let all_ok = |key: &str| {
            v[key]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["ok"] == true))
        };
        all_ok("nodes")
            && all_ok("keepers")
            && v["attestation"]["servers"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["ok"] == true))
    };
    while !answers() {
        assert!(Instant::now() < deadline, "cluster did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each node's `(committed, pending)` from `obscura status`.
pub fn status(dir: &Path) -> Vec<(u64, u64)> {
    let out = obscura(&["status", "--cluster", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("node "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // "node N: C images, P pending"
            (w[2].parse().unwrap(), w[4].parse().unwrap())
        })
        .collect()
}

/// A running `obscura cluster up`, and nodes restarted on their own; all stopped when dropped.
pub struct Up {
    pub child: Child,
    pub dir: PathBuf,
    restarted: Vec<Child>,
}

impl Up {
    /// Run node `node` on its own after it was stopped. Wait with [`wait_for_status`] once
    /// every stopped node is restarted.
    pub fn restart_node(&mut self, node: u8) {
        let child = Command::new(BIN)
            .args(["node", "run"])
            .arg(self.dir.join(format!("node{node}")).join("node.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.restarted.push(child);
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Any node left behind by a failed test.
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("node run {}", self.dir.display())])
            .status();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn start(dir: &Path) -> Up {
    let up = up(dir);
    register_and_login(dir);
    up
}

/// `obscura cluster up`, once every node and keeper answers, with no account yet.
pub fn up(dir: &Path) -> Up {
    let child = Command::new(BIN)
        .args(["cluster", "up"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up {
        child,
        dir: dir.to_path_buf(),
        restarted: Vec::new(),
    };
    wait_for_status(dir);
    up
}

/// A fresh folder holding three of the test photos (a grey PNG, a colour PNG, a JPEG).
pub fn three_photos(what: &str) -> PathBuf {
    let photos = std::env::temp_dir().join(format!("obscura-{what}-photos-{}", std::process::id()));
    std::fs::remove_dir_all(&photos).ok();
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["camera.png", "coffee.png", "rocket.jpg"] {
        std::fs::copy(testdata(&format!("photos/{name}")), photos.join(name)).unwrap();
    }
    photos
}

/// Flip one byte of the value under `key` in a stopped node's redb table.
pub fn flip_byte(dir: &Path, node: u8, table: &str, key: &[u8], at: usize) {
    use redb::ReadableTable;
    let db = redb::Database::open(dir.join(format!("node{node}")).join("store.redb")).unwrap();
    let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(def).unwrap();
        let mut value = t.get(key).unwrap().unwrap().value().to_vec();
        value[at] ^= 0x55;
        t.insert(key, value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// An image id's 16 bytes from its hex.
pub fn hex_id(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A copy of the `obscura` executable with one byte more: another build, as far as a
/// measurement can tell.
pub fn modified_build(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("obscura-modified-{name}-{}", std::process::id()));
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Start `obscura worker run` (from `exe`) for the worker `name` of `dir` on `port`.
pub fn worker(
    exe: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    port: u16,
) -> std::process::Child {
    let cluster = dir.to_str().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let out = obscura(&[
        "worker",
        "init",
        "--cluster",
        cluster,
        "--name",
        name,
        "--listen",
        &listen,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let child = Command::new(exe)
        .args(["worker", "run"])
        .arg(dir.join("workers").join(name).join("worker.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "worker {name} did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// The HTTP status and body of a POST to a worker on loopback, with `headers` besides.
pub fn post_worker(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// The HTTP status of a JSON POST to a worker on loopback.
pub fn post_status(port: u16, path: &str, body: &str) -> u16 {
    post_worker(port, path, &[], body).0
}
