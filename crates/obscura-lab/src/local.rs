//! Node and keeper processes on this machine: `obscura node run` and `obscura keeper run`
//! children of `cluster up`, `demo`, `eval` and `bench`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

use obscura_client::Client;
use tokio::process::{Child, Command};

/// How long a node has to sign its audit log and stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A process of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Member {
    /// Node `x`.
    Node(u8),
    /// Keeper `j`.
    Keeper(u8),
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Member::Node(x) => write!(f, "node {x}"),
            Member::Keeper(j) => write!(f, "keeper {j}"),
        }
    }
}

/// The `PREFIXN/FILE` configurations of a cluster directory, in number order.
fn configs(dir: &Path, prefix: &str, file: &str) -> Result<Vec<(u8, PathBuf)>, Error> {
    let mut configs: Vec<(u8, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let number = e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok()?;
            let config = e.path().join(file);
            config.is_file().then_some((number, config))
        })
        .collect();
    configs.sort();
    Ok(configs)
}

/// The `keeperJ/keeper.json` files of a cluster directory (none with HMAC tokens).
pub fn keeper_configs(dir: &Path) -> Result<Vec<(u8, PathBuf)>, Error> {
    configs(dir, "keeper", "keeper.json")
}

/// The `nodeN/node.json` files of a cluster directory, in node order.
pub fn node_configs(dir: &Path) -> Result<Vec<(u8, PathBuf)>, Error> {
    let configs = configs(dir, "node", "node.json")?;
    if configs.is_empty() {
        return Err(format!(
            "{} holds no node configurations; make one with `obscura cluster init`",
            dir.display()
        )
        .into());
    }
    Ok(configs)
}

/// Ask a process to stop (SIGTERM), so a node signs its audit log before it exits.
fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

/// A process's resident memory from `/proc/PID/status` ("VmRSS:  1234 kB").
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Every node and keeper of a cluster directory, running as child processes.
pub struct Running {
    children: Vec<(Member, Child)>,
    exited: Vec<bool>,
}

impl Running {
    /// Start `obscura keeper run` for every keeper and `obscura node run` for every node of
    /// `dir`. With `logs`, node N's output goes to `logs/nodeN.log` (keeper J's to
    /// `logs/keeperJ.log`); without, to this process's standard error.
    ///
    /// # Errors
    /// No node configurations, or a process that cannot be started (those already started are
    /// killed).
    pub fn start(dir: &Path, logs: Option<&Path>) -> Result<Running, Error> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut children = Vec::new();
        let members = keeper_configs(dir)?
            .into_iter()
            .map(|(j, c)| (Member::Keeper(j), c))
            .chain(
                node_configs(dir)?
                    .into_iter()
                    .map(|(x, c)| (Member::Node(x), c)),
            );
        for (member, config) in members {
            let (kind, log) = match member {
                Member::Node(x) => ("node", format!("node{x}.log")),
                Member::Keeper(j) => ("keeper", format!("keeper{j}.log")),
            };
            let (out, err) = match logs {
                Some(l) => {
                    let path = l.join(log);
                    let f = std::fs::File::create(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let g = f.try_clone().map_err(|e| e.to_string())?;
                    (Stdio::from(f), Stdio::from(g))
                }
                None => (Stdio::inherit(), Stdio::inherit()),
            };
            let child = Command::new(&exe)
                .args([kind, "run"])
                .arg(&config)
                .env(
                    obscura_server::STOP_WITH_PARENT,
                    std::process::id().to_string(),
                )
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", config.display()))?;
            children.push((member, child));
        }
        let exited = vec![false; children.len()];
        Ok(Running { children, exited })
    }

    /// How many nodes and keepers were started.
    pub fn counts(&self) -> (usize, usize) {
        let nodes = self
            .children
            .iter()
            .filter(|(m, _)| matches!(m, Member::Node(_)))
            .count();
        (nodes, self.children.len() - nodes)
    }

    /// Members that exited since the last call, with their status.
    pub fn newly_exited(&mut self) -> Vec<(Member, ExitStatus)> {
        let mut out = Vec::new();
        for (i, (member, c)) in self.children.iter_mut().enumerate() {
            if !self.exited[i] {
                if let Ok(Some(status)) = c.try_wait() {
                    self.exited[i] = true;
                    out.push((*member, status));
                }
            }
        }
        out
    }

    /// Each running node's resident memory (VmRSS), in bytes, node 1 first; `None` where the
    /// system does not say (no /proc).
    pub fn node_memory(&self) -> Vec<(u8, Option<u64>)> {
        self.memory()
            .into_iter()
            .filter_map(|(member, rss)| match member {
                Member::Node(x) => Some((x, rss)),
                Member::Keeper(_) => None,
            })
            .collect()
    }

    /// Each running member's resident memory (VmRSS), in bytes; `None` where the system does
    /// not say (no /proc).
    pub fn memory(&self) -> Vec<(Member, Option<u64>)> {
        self.children
            .iter()
            .zip(&self.exited)
            .filter(|(_, exited)| !**exited)
            .map(|((member, child), _)| (*member, child.id().and_then(resident_bytes)))
            .collect()
    }

    /// Whether every node has exited.
    pub fn all_exited(&self) -> bool {
        self.exited.iter().all(|e| *e)
    }

    /// Wait until every node and keeper answers a status request.
    ///
    /// # Errors
    /// A member that exits first, or `limit` passing, naming those not ready.
    pub async fn wait_ready(&mut self, client: &Client, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((member, status)) = self.newly_exited().first() {
                return Err(format!("{member} exited while starting ({status})").into());
            }
            let mut not_ready: Vec<String> = client
                .reachable()
                .await
                .into_iter()
                .filter_map(|(node, s)| s.err().map(|e| format!("node {node}: {e}")))
                .collect();
            not_ready.extend(
                client
                    .keeper_status()
                    .await
                    .into_iter()
                    .filter_map(|(j, s)| s.err().map(|e| format!("keeper {j}: {e}"))),
            );
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {} s: {}",
                    limit.as_secs(),
                    not_ready.join("; ")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop one member as [`stop`](Self::stop) does, leaving the others running; stopping it
    /// again returns the same status.
    ///
    /// # Errors
    /// No such member, or why it had to be killed.
    pub async fn stop_member(&mut self, member: Member) -> Result<ExitStatus, Error> {
        let i = self
            .children
            .iter()
            .position(|(m, _)| *m == member)
            .ok_or_else(|| format!("{member} is not part of this cluster"))?;
        let child = &mut self.children[i].1;
        terminate(child);
        let r = wait_or_kill(child).await;
        self.exited[i] = true;
        r
    }

    /// Stop every member: SIGTERM, then a kill after the grace period. Returns each one's exit
    /// status, or why it had to be killed.
    pub async fn stop(mut self) -> Vec<(Member, Result<ExitStatus, Error>)> {
        for (_, c) in &self.children {
            terminate(c);
        }
        let mut out = Vec::new();
        for (member, c) in &mut self.children {
            out.push((*member, wait_or_kill(c).await));
        }
        out
    }
}

/// Wait the grace period for `child` to exit, then kill it.
async fn wait_or_kill(child: &mut Child) -> Result<ExitStatus, Error> {
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(e.to_string().into()),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("did not stop within {} s; killed", STOP_GRACE.as_secs()).into())
        }
    }
}

/// An attested worker (`obscura worker run`) of a cluster, as a child process; killed when
/// dropped.
pub struct Worker {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Worker {
    /// Make worker `name` of the cluster in `dir` (`obscura worker init`) on a free port and
    /// run it, once it listens.
    ///
    /// # Errors
    /// Why it could not be made or did not start within ten seconds.
    pub async fn start(dir: &Path, name: &str, logs: Option<&Path>) -> Result<Worker, Error> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let port = crate::harness::free_base_port(1)?;
        let listen = format!("127.0.0.1:{port}");
        let made = Command::new(&exe)
            .args(["worker", "init", "--cluster"])
            .arg(dir)
            .args(["--name", name, "--listen", &listen])
            .output()
            .await
            .map_err(|e| format!("cannot run `obscura worker init`: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "obscura worker init: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )
            .into());
        }
        let config = dir.join("workers").join(name).join("worker.json");
        let log = match logs {
            Some(l) => {
                let path = l.join(format!("worker-{name}.log"));
                Stdio::from(
                    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?,
                )
            }
            None => Stdio::null(),
        };
        let child = Command::new(&exe)
            .args(["worker", "run"])
            .arg(&config)
            .stdout(log)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", config.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&listen).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!("worker {name} did not listen on {listen}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Worker {
            child,
            url: format!("http://{listen}"),
        })
    }

    /// Stop it.
    pub async fn stop(mut self) {
        terminate(&self.child);
        let _ = wait_or_kill(&mut self.child).await;
    }
}
