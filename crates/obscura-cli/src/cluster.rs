//! `obscura cluster init` (and, with the laboratory, `cluster up`): a new cluster's
//! configurations, TLS material and sealed keys, made by the dealer in one directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::error::Failure;

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Make node configurations, TLS material and keys (sealed) in a new directory.
    ///
    /// Examples:
    ///   obscura cluster init mycluster
    ///   obscura cluster init mycluster --nodes 6 --threshold 3 --storage compact
    #[command(verbatim_doc_comment)]
    Init(Init),
    /// Deliver each keeper its token-key shares, once its evidence is appraised under the
    /// cluster's attestation policy: sealed to the key the evidence binds, with the data owner's
    /// signed order. A keeper refused, or down, is sent nothing; its shares stay waiting in
    /// DIR/owner/provision.sealed for the next run. The first `obscura register` does this too.
    ///
    /// Example: `obscura cluster provision --cluster DIR`
    Provision {
        /// The cluster directory (with the data owner's folder).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give keeper J back its token-key shares from T other keepers: after it was replaced,
    /// or upgraded to a build (allowed first with `obscura attest allow`) its sealed shares do
    /// not open under. Each helper appraises the keeper's evidence under the cluster's policy
    /// and sends its part sealed to the key the evidence binds, masked so that no keeper learns
    /// another's share; keeper J checks every part against client.json's public shares, and
    /// names a helper whose part is wrong. The data owner's order, from DIR/owner.
    ///
    /// Examples:
    ///   obscura cluster recover --cluster DIR --keeper 2
    ///   obscura cluster recover --cluster DIR --keeper 2 --exclude 1 --json
    #[command(verbatim_doc_comment)]
    Recover {
        /// The cluster directory (with the data owner's folder).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The keeper that lost its shares, 1..=m.
        #[arg(long)]
        keeper: u8,
        /// A keeper not to ask for a part (repeat): one that was down or made the last try
        /// fail. Default: the first T keepers that hold the key version.
        #[arg(long, value_name = "J")]
        exclude: Vec<u8>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run every node and keeper of DIR as a child process until interrupted.
    #[cfg(feature = "lab")]
    #[command(
        after_help = "Examples:\n  obscura cluster up /tmp/demo                 # in its own terminal; Ctrl-C stops every server"
    )]
    Up {
        /// The cluster directory.
        dir: PathBuf,
    },
}

// `cluster init`'s arguments (its help is the variant's).
#[derive(clap::Args)]
pub(crate) struct Init {
    /// The directory to create (must not exist).
    dir: PathBuf,
    /// Number of nodes (n). A search needs 2t + 1 nodes (t = k − 1), and enough that any
    /// two nodes that answer saw the same query checked: at least ⌈(n + t + 1) / 2⌉. With
    /// k = 3: 5 nodes search only when all are up, 6 with one down, 7 or 8 with two down.
    /// Rebuilding an image needs k; indexing needs every node.
    #[arg(long, default_value_t = obscura_cluster::deal::DEFAULT_NODES)]
    nodes: usize,
    /// Shares needed to rebuild an image (k); any k − 1 nodes together learn nothing (with
    /// `--storage compact`, nothing unless they break AES-256-GCM).
    #[arg(long, default_value_t = obscura_cluster::deal::DEFAULT_THRESHOLD)]
    threshold: usize,
    /// Host the nodes listen on and are reached at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Node i listens on base-port + i − 1.
    #[arg(long, default_value_t = 7401)]
    base_port: u16,
    /// Where band tokens come from: `voprf` (keepers evaluate an RFC 9497 VOPRF on shares
    /// of the keys; no client holds one) or `hmac` (every client holds the token keys).
    #[arg(long, value_enum, default_value_t = Tokens::Voprf)]
    tokens: Tokens,
    /// How images are shared among the nodes: `shamir` (each node stores a share as large as
    /// the image, n times the image in all) or `compact` (the image encrypted once with
    /// AES-256-GCM under a key from the OS, the ciphertext cut into Reed–Solomon pieces and only
    /// the key Shamir-shared: each node stores about 1/k of the image, n/k in all). Either way
    /// k − 1 nodes learn nothing of an image; Shamir's coefficients come from AES-128-CTR
    /// keyed by the OS, compact storage adds AES-256-GCM to what they must break.
    #[arg(long, value_enum, default_value_t = StorageArg::Shamir)]
    storage: StorageArg,
    /// Keepers (m), each holding one Shamir share of every token key.
    #[arg(long, default_value_t = 3)]
    keepers: usize,
    /// Keepers needed to evaluate tokens (T); fewer learn nothing of the keys.
    #[arg(long, default_value_t = 2)]
    keeper_threshold: usize,
    /// Keeper j listens on keeper-base-port + j − 1 [default: base-port + 100].
    #[arg(long)]
    keeper_base_port: Option<u16>,
    /// Evaluations each user may ask of each keeper per hour (a search costs 8 × 9 at radius
    /// 1, whatever the number of nodes; an image 8).
    #[arg(long, default_value_t = obscura_cluster::deal::DEFAULT_KEEPER_BUDGET)]
    keeper_budget: u64,
    /// Largest Hamming distance a search reports and a match entitles a querier to fetch
    /// (τ); every node enforces it.
    #[arg(long, default_value_t = 10)]
    max_distance: u32,
    /// Requests each user may make at each node per hour: a search is a Stage-1 lookup, a
    /// query check and a Stage-2 evaluation, 3 in all (its later rounds count only when
    /// refused). An evaluation costs one more for every 1,024 candidates past the first
    /// 1,024, and an exhaustive list one for every 16,384 images: an exhaustive search of
    /// 100,000 images costs about 110, of 2^20 about 1,090.
    #[arg(long, default_value_t = 3600)]
    queries_per_hour: u32,
    /// Fetches and match resolutions each user may make at each node per hour.
    #[arg(long, default_value_t = 600)]
    fetches_per_hour: u32,
}

/// How images are shared (see `cluster init --storage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StorageArg {
    /// Shamir over GF(2^8): n times the image in all.
    Shamir,
    /// AES-256-GCM, Reed–Solomon pieces and a Shamir-shared key: n/k times the image in all.
    Compact,
}

impl From<StorageArg> for obscura_client::config::StorageKind {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Shamir => obscura_client::config::StorageKind::Shamir,
            StorageArg::Compact => obscura_client::config::StorageKind::Compact,
        }
    }
}

/// Where band tokens come from (see `cluster init --tokens`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tokens {
    /// RFC 9497 VOPRF evaluated by threshold keepers.
    Voprf,
    /// HMAC-SHA256 under keys every client holds.
    Hmac,
}

impl From<Tokens> for obscura_client::config::TokenKind {
    fn from(t: Tokens) -> Self {
        match t {
            Tokens::Voprf => obscura_client::config::TokenKind::Voprf,
            Tokens::Hmac => obscura_client::config::TokenKind::Hmac,
        }
    }
}

impl ClusterCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            ClusterCommand::Init(init) => init.run(),
            ClusterCommand::Provision { cluster, json } => {
                let client = owner_client(&cluster, "provisioning keepers")?;
                let outcome = provision(&cluster, &client).await?;
                let waiting = outcome.iter().filter(|(_, r)| r.is_err()).count();
                if json {
                    let keepers: Vec<_> = outcome
                        .iter()
                        .map(|(j, r)| match r {
                            Ok(()) => serde_json::json!({"keeper": j, "provisioned": true}),
                            Err(f) => serde_json::json!({
                                "keeper": j, "provisioned": false, "reason": f.to_string(),
                                "misbehaved": f.is_misbehaviour(),
                            }),
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "keepers": keepers }));
                } else {
                    report_provision(&cluster, &outcome);
                }
                Ok(if waiting == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            ClusterCommand::Recover {
                cluster,
                keeper,
                exclude,
                json,
            } => {
                let client = owner_client(&cluster, "recovering a keeper's shares")?;
                match client.recover(keeper, &exclude).await {
                    Ok(r) => {
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({
                                    "keeper": r.keeper, "recovered": true,
                                    "helpers": r.helpers, "key_version": r.version,
                                    "token_keys": r.nodes,
                                })
                            );
                        } else {
                            println!(
                                "keeper {} holds its token-key shares again: key version {}, {} \
                                 token keys, parts from keepers {}",
                                r.keeper,
                                r.version,
                                r.nodes,
                                r.helpers
                                    .iter()
                                    .map(u8::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) if json => {
                        let culprits = e.culprits();
                        println!(
                            "{}",
                            serde_json::json!({
                                "keeper": keeper, "recovered": false, "reason": e.to_string(),
                                "misbehaved": culprits
                                    .iter()
                                    .map(|p| crate::error::names(std::slice::from_ref(p)))
                                    .collect::<Vec<_>>(),
                            })
                        );
                        Ok(ExitCode::FAILURE)
                    }
                    Err(e) => Err(Failure::then(
                        e,
                        "the keeper keeps no part of a failed recovery; fix what is named and \
                         run it again",
                    )),
                }
            }
            #[cfg(feature = "lab")]
            ClusterCommand::Up { dir } => crate::lab::cluster_up(&dir).await,
        }
    }
}

/// The client of `cluster`, which must hold the data owner's key: `what` is the data owner's
/// to do.
pub(crate) fn owner_client(
    cluster: &std::path::Path,
    what: &str,
) -> Result<obscura_client::Client, Failure> {
    let client = crate::client(cluster)?;
    if !client.is_owner() {
        return Err(format!(
            "{} holds no data owner's key (owner/): {what} is the data owner's, from the \
             directory `cluster init` made",
            cluster.display()
        )
        .into());
    }
    Ok(client)
}

impl Init {
    fn run(self) -> Result<ExitCode, Failure> {
        let Init {
            dir,
            nodes,
            threshold,
            host,
            base_port,
            tokens,
            storage,
            keepers,
            keeper_threshold,
            keeper_base_port,
            keeper_budget,
            max_distance,
            queries_per_hour,
            fetches_per_hour,
        } = self;
        if max_distance > 64 {
            return Err("--max-distance is at most 64".into());
        }
        let keeper_base = keeper_base_port.unwrap_or_else(|| base_port.saturating_add(100));
        let mut opt = obscura_cluster::deal::InitOptions::new(
            nodes,
            threshold,
            &host,
            base_port,
            keeper_base,
        );
        opt.tokens = tokens.into();
        opt.storage = storage.into();
        opt.keepers = keepers;
        opt.keeper_threshold = keeper_threshold;
        opt.keeper_ports = (0..keepers)
            .map(|j| keeper_base.saturating_add(j as u16))
            .collect();
        opt.keeper_budget = keeper_budget;
        opt.policy.max_distance = max_distance;
        opt.capabilities.queries_per_hour = queries_per_hour;
        opt.capabilities.fetches_per_hour = fetches_per_hour;
        obscura_cluster::deal::init(&dir, &opt).map_err(|e| e.to_string())?;
        let mut availability = obscura_cluster::deal::Availability::of(nodes, threshold)
            .map(|a| a.describe())
            .unwrap_or_default();
        if storage == StorageArg::Compact {
            availability.push_str(
                "; compact storage: each node keeps about 1/k of every image, kept from any \
                 k − 1 nodes by AES-256-GCM",
            );
        }
        // Without the laboratory there is no `cluster up`: each server runs on its own.
        let start = if cfg!(feature = "lab") {
            format!("obscura cluster up {}", dir.display())
        } else {
            format!(
                "obscura keeper run {d}/keeperJ/keeper.json and obscura node run \
                     {d}/nodeI/node.json for each keeper and node",
                d = dir.display()
            )
        };
        println!(
                "created cluster {d} ({threshold}-of-{nodes}): {availability}\n\
                 start it with: {start}\n\
                 then make its first account (the admin) with: obscura register --cluster {d} --user NAME\n\
                 {d}/owner holds the data owner's key: give a copy of {d} without it (nor \
                 simulation-root.secret, which vouches for servers) to users who only search\n\
                 servers attest with the SIMULATION backend (no TEE here): see {d}/attestation-policy.json",
                d = dir.display(),
            );
        Ok(ExitCode::SUCCESS)
    }
}

/// Deliver the token-key shares waiting in `dir` to their keepers.
pub(crate) async fn provision(
    dir: &std::path::Path,
    client: &obscura_client::Client,
) -> Result<Vec<(u8, Result<(), obscura_client::Fault>)>, Failure> {
    Ok(obscura_client::config::provision_waiting(dir, client).await?)
}

/// What [`provision`] did, for people.
pub(crate) fn report_provision(
    dir: &std::path::Path,
    outcome: &[(u8, Result<(), obscura_client::Fault>)],
) {
    if outcome.is_empty() {
        println!("no token-key shares wait here: every keeper took its own");
    }
    for (keeper, r) in outcome {
        match r {
            Ok(()) => println!(
                "keeper {keeper}: appraised, and took its token-key shares (sealed to its \
                 attested key; it keeps them bound to its build)"
            ),
            Err(f) => {
                let culprit = if f.is_misbehaviour() {
                    " (misbehaved)"
                } else {
                    ""
                };
                eprintln!(
                    "keeper {keeper}{culprit}: did not take its token-key shares: {f}; they wait \
                     in {}/{}: run `obscura cluster provision --cluster {}` once it is fixed",
                    dir.display(),
                    obscura_cluster::provision::PROVISION_FILE,
                    dir.display()
                );
            }
        }
    }
}
