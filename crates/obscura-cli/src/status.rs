//! `obscura status`: what each node and keeper reports of itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use obscura_client::{Client, Fault};
use serde_json::{json, Value};

use crate::error::Failure;
use crate::{client, exit};

// `obscura status`'s arguments (its help is the command's).
#[derive(clap::Args)]
pub(crate) struct Status {
    /// The cluster directory.
    #[arg(long, env = "OBSCURA_CLUSTER")]
    cluster: PathBuf,
    /// Print everything as one JSON object: `attestation` (the policy and each server's
    /// appraisal or refusal), `nodes`, `keepers`, `key_version` and `ok`.
    ///
    /// Example: `obscura status --cluster DIR --json | jq '.keepers[] | select(.ok | not)'`
    #[arg(long)]
    json: bool,
}

/// A fault as JSON: what it is, and whether it proves the server misbehaved.
fn fault(e: &Fault) -> Value {
    json!({"ok": false, "error": e.to_string(), "misbehaved": e.is_misbehaviour()})
}

/// Node or keeper `n` that failed with `e`: said as `{kind} {n}: {e}` unless `json`, and as
/// JSON.
fn failed(kind: &str, n: u8, e: &Fault, json: bool) -> Value {
    if !json {
        println!("{kind} {n}: {e}");
    }
    let mut v = fault(e);
    v[kind] = json!(n);
    v
}

impl Status {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        let Status { cluster, json } = self;
        let client = client(&cluster)?;
        let (ok, report) = report(&cluster, &client, json).await;
        if json {
            println!("{report}");
        }
        Ok(exit(ok))
    }
}

/// What every node and keeper reports of itself, printed unless `json`; whether all is well,
/// and all of it as JSON (`obscura status --json`, and the app's cluster page).
pub(crate) async fn report(cluster: &Path, client: &Client, json: bool) -> (bool, Value) {
    let (mut ok, attestation) = attestation(client, !json).await;
    let ours = client.key_version();
    let mut others = Vec::new();
    let mut nodes = Vec::new();
    // Logged out, nodes tell nothing but that they answer.
    if client.user().is_some() {
        for (node, s) in client.status().await {
            match s {
                Ok(s) => {
                    let (current, next) = (s.key_versions.first(), s.key_versions.get(1));
                    if !json {
                        println!(
                            "node {node}: {} images, {} pending, key version {}{}",
                            s.committed,
                            s.pending,
                            current.map_or("?".into(), u32::to_string),
                            next.map_or(String::new(), |v| format!(" (moving to {v})"))
                        );
                    }
                    if !s.key_versions.contains(&ours) {
                        others.push(node);
                    }
                    nodes.push(json!({"node": node, "ok": true, "images": s.committed,
                            "pending": s.pending, "key_versions": s.key_versions}));
                }
                Err(e) => {
                    ok = false;
                    nodes.push(failed("node", node, &e, json));
                }
            }
        }
    } else {
        if !json {
            println!("not logged in: showing only which nodes answer");
        }
        for (node, r) in client.reachable().await {
            match r {
                Ok(()) => {
                    if !json {
                        println!("node {node}: up");
                    }
                    nodes.push(json!({"node": node, "ok": true}));
                }
                Err(e) => {
                    ok = false;
                    nodes.push(failed("node", node, &e, json));
                }
            }
        }
    }
    if !others.is_empty() {
        ok = false;
        if !json {
            println!(
                "this client uses key version {ours}, which nodes {others:?} do not serve: \
                     finish the rotation (`obscura keys rotate`) or update client.json"
            );
        }
    }
    let mut keepers = Vec::new();
    for (keeper, s) in client.keeper_status().await {
        match s {
            Ok(s) => {
                // Up and waiting for its shares is not a fault of the cluster's servers.
                if !json {
                    if s.key_versions.is_empty() {
                        println!(
                            "keeper {keeper}: up, but holds no token-key share: the data \
                                 owner delivers them once it is appraised (`obscura cluster \
                                 provision`), or, if it held them before (replaced, or \
                                 upgraded), has the other keepers give them back (`obscura \
                                 cluster recover --keeper {keeper}`)"
                        );
                    } else {
                        println!(
                            "keeper {keeper}: up, key versions {:?}, {} audit entries",
                            s.key_versions, s.audit_entries
                        );
                    }
                }
                keepers.push(json!({"keeper": keeper, "ok": true,
                        "key_versions": s.key_versions, "audit_entries": s.audit_entries,
                        "holds_shares": !s.key_versions.is_empty()}));
            }
            Err(e) => {
                ok = false;
                keepers.push(failed("keeper", keeper, &e, json));
            }
        }
    }
    // Tokens need T keepers holding shares of the version this client uses.
    let holding = keepers
        .iter()
        .filter(|k| {
            k["key_versions"]
                .as_array()
                .is_some_and(|v| v.contains(&json!(ours)))
        })
        .count();
    let tokens = keepers.is_empty() || holding >= client.keeper_threshold();
    // Shares still waiting at the data owner are a cluster being set up, not a fault.
    let waiting = obscura_client::config::pending_provision(cluster)
        .ok()
        .flatten()
        .is_some();
    if !tokens && !json {
        println!(
            "only {holding} keepers hold shares of key version {ours}, and tokens need {}: \
                 no search or index works until more do{}",
            client.keeper_threshold(),
            if waiting {
                "; their shares wait at the data owner: the first `obscura register`, or \
                     `obscura cluster provision`, delivers them"
            } else {
                ""
            }
        );
    }
    if !tokens && !waiting {
        ok = false;
    }
    let report = json!({"ok": ok, "key_version": ours, "logged_in": client.user().is_some(),
            "attestation": attestation, "nodes": nodes, "keepers": keepers,
            "nodes_without_key_version": others, "tokens": tokens,
            "shares_waiting": waiting});
    (ok, report)
}

/// Each server's appraisal under the cluster's attestation policy, printed when `say`; whether
/// every one passed, and all of it as JSON.
async fn attestation(client: &Client, say: bool) -> (bool, Value) {
    let Some(policy) = client.attestation_policy() else {
        if say {
            println!(
                "attestation: this cluster has no policy (made before attestation); servers are \
                 not appraised"
            );
        }
        return (true, json!({"policy": null, "servers": []}));
    };
    if say {
        println!(
            "attestation policy {:?} version {}",
            policy.name, policy.version
        );
        if policy.allow_simulation {
            println!(
                "  SIMULATION ALLOWED: no TEE here; an appraisal proves only that the cluster's \
                 own simulation root endorsed the server, not what hardware runs it"
            );
        }
    }
    let about = json!({"name": policy.name, "version": policy.version,
        "allow_simulation": policy.allow_simulation});
    let mut ok = true;
    let mut servers = Vec::new();
    for (party, appraisal) in client.appraisals().await {
        let who = crate::error::names(&[party]);
        match appraisal {
            Ok(a) => {
                if say {
                    println!("  {who}: attested, {}", a.summary());
                }
                servers.push(json!({"server": who, "ok": true, "appraisal": a}));
            }
            Err(e) => {
                ok = false;
                if say {
                    let misbehaved = if e.is_misbehaviour() {
                        " (misbehaved)"
                    } else {
                        ""
                    };
                    println!("  {who}{misbehaved}: not used: {e}");
                }
                let mut v = fault(&e);
                v["server"] = json!(who);
                servers.push(v);
            }
        }
    }
    (ok, json!({"policy": about, "servers": servers}))
}
