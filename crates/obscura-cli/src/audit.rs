//! `obscura audit verify|events`: the nodes' tamper-evident logs, and the user's own trail at
//! the keepers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_client::audit;
use serde_json::json;

use crate::error::Failure;
use crate::{client, exit};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Fetch every node's hash-chained audit log and check its chain and signed checkpoints
    /// against the node's audit key; also check that no log lost the head verified last time.
    #[command(
        after_help = "Examples:\n  obscura audit verify --cluster /tmp/demo\n  obscura audit verify --cluster /tmp/demo --json"
    )]
    Verify {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Print `{"nodes":[{"node","ok","entries","checkpoints","error"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Your own audit trail at each keeper: logins, secrets made, used, exported, deleted,
    /// signatures.
    #[command(after_help = "Examples:\n  obscura audit events --cluster /tmp/demo --json")]
    Events {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl AuditCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            AuditCommand::Verify { cluster, json } => verify(&cluster, json).await,
            AuditCommand::Events { cluster, json } => crate::account::events(&cluster, json).await,
        }
    }
}

/// `obscura audit verify`.
async fn verify(cluster: &Path, json: bool) -> Result<ExitCode, Failure> {
    let verdicts = audit::verify_cluster(cluster, &client(cluster)?)
        .await
        .map_err(|e| e.to_string())?;
    let ok = verdicts.iter().all(|v| v.outcome.is_ok());
    if json {
        println!("{}", json!({ "nodes": verdicts_json(&verdicts) }));
    } else {
        for v in &verdicts {
            match &v.outcome {
                Ok(r) => println!(
                    "node {}: ok, {} entries, {} signed checkpoints",
                    v.node, r.entries, r.checkpoints
                ),
                Err(e) => println!("node {}: FAILED: {e}", v.node),
            }
        }
    }
    Ok(exit(ok))
}

/// Each node's verdict as JSON: `{"node", "ok", "entries", "checkpoints", "error"}`.
pub(crate) fn verdicts_json(verdicts: &[audit::NodeVerdict]) -> Vec<serde_json::Value> {
    verdicts
        .iter()
        .map(|v| match &v.outcome {
            Ok(r) => json!({"node": v.node, "ok": true, "entries": r.entries,
                "checkpoints": r.checkpoints, "error": null}),
            Err(e) => json!({"node": v.node, "ok": false, "entries": null,
                "checkpoints": null, "error": e.to_string()}),
        })
        .collect()
}
