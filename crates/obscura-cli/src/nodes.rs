//! Node processes on this machine: `obscura node run` children of `cluster up` and `demo`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use obscura_client::Client;
use tokio::process::{Child, Command};

/// How long a node has to sign its audit log and stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The `nodeN/node.json` files of a cluster directory, in node order.
pub fn node_configs(dir: &Path) -> Result<Vec<(u8, PathBuf)>, String> {
    let mut configs: Vec<(u8, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let node = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let config = e.path().join("node.json");
            config.is_file().then_some((node, config))
        })
        .collect();
    configs.sort();
    if configs.is_empty() {
        return Err(format!(
            "{} holds no node configurations; make one with `obscura cluster init`",
            dir.display()
        ));
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

/// Every node of a cluster directory, running as child processes.
pub struct Running {
    children: Vec<(u8, Child)>,
    exited: Vec<bool>,
}

impl Running {
    /// Start `obscura node run` for every node of `dir`. With `logs`, node N's output goes to
    /// `logs/nodeN.log`; without, to this process's standard error.
    ///
    /// # Errors
    /// No node configurations, or a process that cannot be started (those already started are
    /// killed).
    pub fn start(dir: &Path, logs: Option<&Path>) -> Result<Running, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut children = Vec::new();
        for (node, config) in node_configs(dir)? {
            let (out, err) = match logs {
                Some(l) => {
                    let path = l.join(format!("node{node}.log"));
                    let f = std::fs::File::create(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let g = f.try_clone().map_err(|e| e.to_string())?;
                    (Stdio::from(f), Stdio::from(g))
                }
                None => (Stdio::inherit(), Stdio::inherit()),
            };
            let child = Command::new(&exe)
                .args(["node", "run"])
                .arg(&config)
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", config.display()))?;
            children.push((node, child));
        }
        let exited = vec![false; children.len()];
        Ok(Running { children, exited })
    }

    /// How many nodes were started.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Nodes that exited since the last call, with their status.
    pub fn newly_exited(&mut self) -> Vec<(u8, ExitStatus)> {
        let mut out = Vec::new();
        for (i, (node, c)) in self.children.iter_mut().enumerate() {
            if !self.exited[i] {
                if let Ok(Some(status)) = c.try_wait() {
                    self.exited[i] = true;
                    out.push((*node, status));
                }
            }
        }
        out
    }

    /// Whether every node has exited.
    pub fn all_exited(&self) -> bool {
        self.exited.iter().all(|e| *e)
    }

    /// Wait until every node answers a status request.
    ///
    /// # Errors
    /// A node that exits first, or `limit` passing, naming the nodes not ready.
    pub async fn wait_ready(&mut self, client: &Client, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((node, status)) = self.newly_exited().first() {
                return Err(format!("node {node} exited while starting ({status})"));
            }
            let not_ready: Vec<String> = client
                .status()
                .await
                .into_iter()
                .filter_map(|(node, s)| s.err().map(|e| format!("node {node}: {e}")))
                .collect();
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nodes not ready after {} s: {}",
                    limit.as_secs(),
                    not_ready.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop every node: SIGTERM, then a kill after the grace period. Returns each node's exit
    /// status, or why it had to be killed.
    pub async fn stop(mut self) -> Vec<(u8, Result<ExitStatus, String>)> {
        for (_, c) in &self.children {
            terminate(c);
        }
        let mut out = Vec::new();
        for (node, c) in &mut self.children {
            let r = match tokio::time::timeout(STOP_GRACE, c.wait()).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    let _ = c.kill().await;
                    Err(format!(
                        "did not stop within {} s; killed",
                        STOP_GRACE.as_secs()
                    ))
                }
            };
            out.push((*node, r));
        }
        out
    }
}
