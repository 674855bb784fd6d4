//! Short forms of the reliability campaigns (`docs/reliability.md`), run with every test: the
//! long forms are `scripts/load.sh` and `scripts/crash-campaign.sh`.

mod common;

use common::{obscura, text};

/// The tests here that start a cluster through `obscura load` take turns: two clusters starting
/// at once on one machine can pick the same free port.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// 30 s of three searching clients and one indexing client against a real cluster: no errors,
/// every search finds its photo.
#[test]
fn a_cluster_under_load_answers_every_request() {
    let _turn = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let out = obscura(&["load", "--seconds", "30", "--searchers", "3", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["searches"].as_u64().unwrap() > 0, "{report}");
    assert!(report["indexed"].as_u64().unwrap() > 0, "{report}");
    // Every node and keeper was sampled.
    assert_eq!(report["memory"].as_array().unwrap().len(), 9, "{report}");
}

/// Ten crash trials (`scripts/crash_campaign.py`): index, delete, key rotation and keeper
/// writes, each with a SIGKILL of the client, a node or a keeper while it runs, then a restart
/// and a rerun; after each, every reported image rebuilds byte for byte, every node holds the
/// same images and none pending, the audit logs verify and every secret made is listed. The
/// seed is printed, so a failure can be replayed.
#[test]
fn ten_crash_trials_leave_nothing_lost_or_half_written() {
    // Its turn alone: beside the 30-second load run on two cores, every call of its trials
    // slowed down past what the campaign is about.
    let _turn = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let script = format!(
        "{}/../../scripts/crash_campaign.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = match std::process::Command::new("python3")
        .args([&script, "10", &seed])
        .env("OBSCURA_BIN", common::BIN)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: python3 is not available here ({e})");
            return;
        }
    };
    assert!(out.status.success(), "seed {seed}: {}", text(&out));
    assert!(text(&out).contains("\"violations\": []"), "{}", text(&out));
}

/// The processes whose command line names `needle`, by pid.
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// A command that runs its own cluster (here `obscura load`) killed with SIGKILL cannot stop
/// its node and keeper processes; they stop by themselves once it is gone, instead of running
/// on unseen with their ports and stores.
#[cfg(target_os = "linux")]
#[test]
fn servers_stop_when_the_command_that_started_them_is_killed() {
    let _turn = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut load = std::process::Command::new(common::BIN)
        .args(["load", "--seconds", "600", "--searchers", "1", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its cluster lives in a folder named after its process id.
    let needle = format!("obscura-load-{}-", load.id());
    let started = std::time::Instant::now();
    let servers = loop {
        let found = processes_naming(&needle);
        // Three keepers and six nodes.
        if found.len() >= 9 {
            break found;
        }
        if let Some(status) = load.try_wait().unwrap() {
            panic!("the load run ended before its servers were up: {status}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "the load run did not start its servers: {found:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    load.kill().unwrap();
    load.wait().unwrap();
    let killed = std::time::Instant::now();
    let mut left = servers.clone();
    while !left.is_empty() && killed.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        left.retain(|pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
    }
    for pid in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    // The killed run could not remove its folder either.
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&needle) {
            std::fs::remove_dir_all(e.path()).ok();
        }
    }
    assert!(
        left.is_empty(),
        "servers still running 30 s after their parent was killed: {left:?}"
    );
}
