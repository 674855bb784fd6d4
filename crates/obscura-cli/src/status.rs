//! `obscura status`: what each node and keeper reports of itself.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::Failure;
use crate::{client, exit};

// `obscura status`'s arguments (its help is the command's).
#[derive(clap::Args)]
pub(crate) struct Status {
    /// The cluster directory.
    #[arg(long)]
    cluster: PathBuf,
}

impl Status {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        let Status { cluster } = self;
        let mut ok = true;
        let client = client(&cluster)?;
        ok &= attestation(&client).await;
        let ours = client.key_version();
        let mut others = Vec::new();
        // Logged out, nodes tell nothing but that they answer.
        let statuses = if client.user().is_some() {
            client.status().await
        } else {
            println!("not logged in: showing only which nodes answer");
            for (node, r) in client.reachable().await {
                match r {
                    Ok(()) => println!("node {node}: up"),
                    Err(e) => {
                        ok = false;
                        println!("node {node}: {e}")
                    }
                }
            }
            Vec::new()
        };
        for (node, s) in statuses {
            match s {
                Ok(s) => {
                    let (current, next) = (s.key_versions.first(), s.key_versions.get(1));
                    println!(
                        "node {node}: {} images, {} pending, key version {}{}",
                        s.committed,
                        s.pending,
                        current.map_or("?".into(), u32::to_string),
                        next.map_or(String::new(), |v| format!(" (moving to {v})"))
                    );
                    if !s.key_versions.contains(&ours) {
                        others.push(node);
                    }
                }
                Err(e) => {
                    ok = false;
                    println!("node {node}: {e}")
                }
            }
        }
        if !others.is_empty() {
            ok = false;
            println!(
                "this client uses key version {ours}, which nodes {others:?} do not serve: \
                     finish the rotation (`obscura keys rotate`) or update client.json"
            );
        }
        for (keeper, s) in client.keeper_status().await {
            match s {
                // Up and waiting for its shares: not a fault of the cluster's servers.
                Ok(s) if s.key_versions.is_empty() => {
                    println!(
                        "keeper {keeper}: up, but holds no token-key share yet: the data owner \
                         delivers them once it is appraised (`obscura cluster provision`)"
                    );
                }
                Ok(s) => println!(
                    "keeper {keeper}: up, key versions {:?}, {} audit entries",
                    s.key_versions, s.audit_entries
                ),
                Err(e) => {
                    ok = false;
                    println!("keeper {keeper}: {e}")
                }
            }
        }
        Ok(exit(ok))
    }
}

/// Each server's appraisal under the cluster's attestation policy; whether every one passed.
async fn attestation(client: &obscura_client::Client) -> bool {
    let Some(policy) = client.attestation_policy() else {
        println!("attestation: this cluster has no policy (made before attestation); servers are not appraised");
        return true;
    };
    println!(
        "attestation policy {:?} version {}",
        policy.name, policy.version
    );
    if policy.allow_simulation {
        println!(
            "  SIMULATION ALLOWED: no TEE here; an appraisal proves only that the cluster's own \
             simulation root endorsed the server, not what hardware runs it"
        );
    }
    let mut ok = true;
    for (party, appraisal) in client.appraisals().await {
        let who = crate::error::names(&[party]);
        match appraisal {
            Ok(a) => println!("  {who}: attested, {}", a.summary()),
            Err(e) => {
                ok = false;
                let misbehaved = if e.is_misbehaviour() {
                    " (misbehaved)"
                } else {
                    ""
                };
                println!("  {who}{misbehaved}: not used: {e}");
            }
        }
    }
    ok
}
