//! `obscura node run` and `obscura keeper run|accept-restore|unlock`: the servers, in the
//! foreground until a signal ends them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_server::log;
use serde_json::json;

use crate::alloc;
use crate::error::Failure;

#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Serve one node from its configuration file until interrupted.
    #[command(after_help = "Examples:\n  \
        obscura node run /tmp/demo/node1/node.json\n  \
        obscura node run /tmp/demo/node1/node.json --log-format json 2>> node1.log")]
    Run {
        /// The node's `node.json`.
        config: PathBuf,
        /// Its lines on standard error (start, stop, warnings, each refused request: its
        /// operation, the refusal's code and time, never the user or what they sent): text,
        /// or json, one object per line.
        #[arg(long, default_value = "text")]
        log_format: obscura_server::log::Format,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeeperCommand {
    /// Serve one keeper from its configuration file until interrupted: it evaluates blinded
    /// band elements with its shares of the token keys, within each client's budget.
    #[command(after_help = "Examples:\n  \
        obscura keeper run /tmp/demo/keeper1/keeper.json\n  \
        obscura keeper run /tmp/demo/keeper1/keeper.json --log-format json")]
    Run {
        /// The keeper's `keeper.json`.
        config: PathBuf,
        /// As for `node run`: text, or json, one object per line.
        #[arg(long, default_value = "text")]
        log_format: obscura_server::log::Format,
    },
    /// A keeper refuses to start when its store is older than its state counter (restored from
    /// an old copy, which could bring back spent login attempts). After checking why, an admin
    /// accepts the restored store with this; the keeper must be stopped.
    #[command(
        after_help = "Examples:\n  obscura keeper accept-restore /tmp/demo/keeper2/keeper.json"
    )]
    AcceptRestore {
        /// The keeper's `keeper.json`.
        config: PathBuf,
    },
    /// On the keeper's own machine, with the keeper stopped: lift an account's login lockout
    /// (for when the only admin is locked out). Recorded in the keeper's audit log.
    #[command(
        after_help = "Examples:\n  obscura keeper unlock /tmp/demo/keeper1/keeper.json --user ana"
    )]
    Unlock {
        /// The keeper's `keeper.json`.
        config: PathBuf,
        /// The account.
        #[arg(long)]
        user: String,
    },
}

impl NodeCommand {
    /// Whether it serves (a long-lived process, whose memory is bounded differently).
    pub(crate) fn serves(&self) -> bool {
        matches!(self, NodeCommand::Run { .. })
    }

    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            NodeCommand::Run { config, log_format } => node_run(&config, log_format).await,
        }
    }
}

impl KeeperCommand {
    /// Whether it serves (a long-lived process, whose memory is bounded differently).
    pub(crate) fn serves(&self) -> bool {
        matches!(self, KeeperCommand::Run { .. })
    }

    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            KeeperCommand::Run { config, log_format } => keeper_run(&config, log_format).await,
            KeeperCommand::AcceptRestore { config } => {
                let (was, now) =
                    obscura_keeper_server::accept_restore(&config).map_err(|e| e.to_string())?;
                println!("keeper store accepted: state counter {was} -> {now}");
                Ok(ExitCode::SUCCESS)
            }
            KeeperCommand::Unlock { config, user } => {
                obscura_keeper_server::unlock_locally(&config, &user).map_err(|e| e.to_string())?;
                println!("{user} may log in again at this keeper");
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

async fn keeper_run(config: &Path, format: log::Format) -> Result<ExitCode, Failure> {
    let stop = shutdown_signal();
    release_freed_memory_periodically();
    let loaded = obscura_keeper_server::LoadedKeeper::load(config).map_err(|e| e.to_string())?;
    let listen = loaded.config.listen.clone();
    let keeper = loaded.config.keeper;
    log::init(format, &format!("keeper {keeper}"));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("keeper {keeper} cannot listen on {listen}: {e}"))?;
    if let Some(why) = &loaded.stranded {
        log::warn(why, &[]);
    }
    log::info(
        "listening",
        &[
            ("on", json!(listen)),
            ("key_shares", json!(loaded.shares.len())),
        ],
    );
    if let Some(metrics) = &loaded.config.metrics {
        log::info(
            "metrics",
            &[("at", json!(format!("http://{metrics}/metrics")))],
        );
    }
    obscura_keeper_server::serve(loaded, listener, stop)
        .await
        .map_err(|e| e.to_string())?;
    log::info("stopped", &[]);
    Ok(ExitCode::SUCCESS)
}

async fn node_run(config: &Path, format: log::Format) -> Result<ExitCode, Failure> {
    // Before the store is opened, which takes a while for a large one: a stop sent meanwhile
    // then ends the server cleanly once it is up instead of killing it.
    let stop = shutdown_signal();
    release_freed_memory_periodically();
    // Off the async workers: the store blocks, and a database connection runs a runtime of
    // its own.
    let path = config.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || obscura_node::config::LoadedNode::load(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let listen = loaded.config.listen.clone();
    let node = loaded.config.node;
    log::init(format, &format!("node {node}"));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("node {node} cannot listen on {listen}: {e}"))?;
    log::info("listening", &[("on", json!(listen))]);
    if let Some(metrics) = &loaded.config.metrics {
        log::info(
            "metrics",
            &[("at", json!(format!("http://{metrics}/metrics")))],
        );
    }
    obscura_node::server::serve(loaded, listener, stop)
        .await
        .map_err(|e| e.to_string())?;
    log::info("stopped", &[]);
    Ok(ExitCode::SUCCESS)
}

/// A server's freed memory goes back to the kernel every [`alloc::RELEASE_EVERY`], for as long
/// as the process runs.
fn release_freed_memory_periodically() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(alloc::RELEASE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(alloc::release_freed_memory).await;
        }
    });
}

/// Ends when the process that started this server as its own (`obscura cluster up`, a demo, a
/// benchmark or a load run, which name themselves in [`obscura_server::STOP_WITH_PARENT`]) is gone:
/// killed, even with SIGKILL, it cannot stop its servers, which would otherwise run on unseen,
/// holding their ports and stores. Never for a server started any other way.
#[cfg(unix)]
async fn parent_gone() {
    let parent = std::env::var(obscura_server::STOP_WITH_PARENT)
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // Its standard error may be the gone parent's, closed: the note must not fail.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "stopping: started by process {parent} ({} says), whose child this server no longer is \
         (its parent is now {})",
        obscura_server::STOP_WITH_PARENT,
        std::os::unix::process::parent_id()
    );
}

/// What ends a server: SIGTERM or Ctrl-C. On Unix both are taken over when this is called, not
/// when the future is first polled, so a signal that comes while the server is still starting
/// (opening a large store) is kept for it, and ends it once it is up, instead of killing it.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(interrupt) => {}
                _ = parent_gone() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
