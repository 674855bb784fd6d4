//! The `obscura` command against real node processes on loopback: init, up, index, search, get,
//! a node killed with SIGKILL, and the errors users meet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_obscura");

fn obscura(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn testdata(p: &str) -> String {
    format!("{}/../../testdata/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// A base port with `n` consecutive free ports after it.
fn free_ports(n: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 20_000) as u16;
    (0..2000u16)
        .map(|i| start.wrapping_add(i * 7) % 40_000 + 20_000)
        .find(|&base| (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("free ports")
}

struct Up {
    child: Child,
    dir: PathBuf,
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
        // Any node left behind by a failed test.
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("node run {}", self.dir.display())])
            .status();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn start(dir: &Path) -> Up {
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
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let cluster = dir.to_str().unwrap();
    while !obscura(&["status", "--cluster", cluster]).status.success() {
        assert!(Instant::now() < deadline, "cluster did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    up
}

#[test]
fn init_up_index_search_get_and_failures() {
    let dir = std::env::temp_dir().join(format!("obscura-cli-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let base = free_ports(5).to_string();
    let cluster = dir.to_str().unwrap();
    let init = obscura(&["cluster", "init", cluster, "--base-port", &base]);
    assert!(init.status.success(), "{}", text(&init));
    // Init refuses to overwrite.
    let again = obscura(&["cluster", "init", cluster]);
    assert!(!again.status.success() && text(&again).contains("already exists"));
    let up = start(&dir);

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
    for field in ["stage1", "stage2", "total"] {
        assert!(v["timings_ms"][field].as_f64().unwrap() > 0.0);
    }
    assert!(v["bytes"]["sent"].as_u64().unwrap() > 0);

    // Get is byte-identical.
    let rebuilt = dir.join("rebuilt.png");
    let id = id_of("coffee.png");
    let out = obscura(&[
        "get",
        "--cluster",
        cluster,
        &id,
        "--out",
        rebuilt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(testdata("photos/coffee.png")).unwrap()
    );

    // Node 5 killed: get still works; search fails at once, naming node 5.
    let node5 = format!("node run {}", dir.join("node5").join("node.json").display());
    assert!(Command::new("pkill")
        .args(["-9", "-f", &node5])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    let out = obscura(&[
        "get",
        "--cluster",
        cluster,
        &id,
        "--out",
        rebuilt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t0 = Instant::now();
    let out = obscura(&[
        "search",
        "--cluster",
        cluster,
        &testdata("derived/coffee.q75.jpg"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("node 5"), "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(15), "search hung");

    // Clear errors for bad input.
    let out = obscura(&["get", "--cluster", cluster, "not-an-id", "--out", "/tmp/x"]);
    assert!(!out.status.success() && text(&out).contains("not an image id"));
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
    drop(up);
}
