//! `obscura`: private image similarity search over secret-shared images.
#![deny(unsafe_code)]

mod account;
mod alloc;
mod keys;
#[cfg(feature = "lab")]
mod lab;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use obscura_client::{audit, pipeline, Client, SearchOutcome};
use obscura_sharing::manifest::ImageId;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "obscura",
    version,
    about = "Private image similarity search over secret-shared images",
    long_about = "Private image similarity search over secret-shared images.\n\n\
        A data owner splits each image and its perceptual hash into k-of-n shares held by n \
        nodes; a search finds the closest stored images without any node seeing an image, a \
        hash or the query; any k nodes rebuild an image.\n\n\
        Start with `obscura cluster init DIR`, then `obscura cluster up DIR` in another \
        terminal (or each server's `node run` and `keeper run`), then index, search and get with `--cluster DIR`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cluster (and, with the laboratory, run it on this machine).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run one node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Run a keeper (the token-key service).
    #[command(subcommand)]
    Keeper(KeeperCommand),
    /// Manage the band-token keys of a running cluster.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Register an account with every keeper (OPAQUE: the password never leaves this
    /// machine). The first account of a cluster is its admin with every role, and needs the
    /// cluster's one-time bootstrap code (DIR/bootstrap.code, read here); after that, an admin
    /// logged in registers others with the roles given. The password is read from
    /// OBSCURA_PASSWORD or standard input.
    #[command(after_help = "Examples:\n  \
        obscura register --cluster /tmp/demo --user admin          # the first account\n  \
        obscura register --cluster /tmp/demo --user ana --role querier\n  \
        obscura register --cluster /tmp/demo --user ida --role owner --role querier")]
    Register {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The account's name.
        #[arg(long)]
        user: String,
        /// A role of the new account (repeat for several): admin, owner (index, delete, fetch
        /// any image, grant), querier (search, fetch what its own searches matched), auditor
        /// (read audit logs). Ignored for the first account, which has every role.
        #[arg(long = "role", default_value = "querier")]
        roles: Vec<String>,
    },
    /// Log in with every keeper that answers (at least T must accept). The sessions are kept in
    /// DIR/session.json (or OBSCURA_SESSION), readable only by you; every keeper operation,
    /// token evaluation included, runs inside them. Failed logins are limited per account and
    /// per address, with growing delays and lockouts that expire (longer each time). The
    /// keepers then sign a capability (your roles and limits, for an hour at most) that every
    /// node checks on every request.
    Login {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The account's name.
        #[arg(long)]
        user: String,
    },
    /// Change your password at every keeper. It logs in with the current password (each
    /// keeper takes a new password only in a session opened minutes before), registers the new
    /// one, ends your other sessions there and logs you in with it. The current password comes
    /// from OBSCURA_PASSWORD or the first line of standard input, the new one from
    /// OBSCURA_NEW_PASSWORD or the next line (asked twice on a terminal). If a keeper is down,
    /// run it again when it is back: it finishes the keepers left.
    Passwd {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The account's name.
        #[arg(long)]
        user: String,
    },
    /// End the sessions at the keepers and delete the session file.
    Logout {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
    },
    /// As an admin: lift an account's login lockout at every keeper.
    Unlock {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The account.
        #[arg(long)]
        user: String,
    },
    /// Secrets held at the keepers as Shamir shares (any T of M rebuild one), and threshold
    /// signing keys; every operation is recorded in your audit trail (`obscura audit events`).
    #[command(subcommand)]
    Secret(account::SecretCommand),
    /// Sign FILE with a threshold signing key: T keepers each give a FROST (RFC 9591) share and
    /// the result is a standard Ed25519 signature. A keeper whose share is wrong is named.
    Sign {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The signing key's id (from `obscura secret generate --signing`).
        #[arg(long)]
        key: String,
        /// The file to sign.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Share image files (and folders, recursively) among the nodes.
    Index {
        /// The cluster directory made by `cluster init`.
        #[arg(long)]
        cluster: PathBuf,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print `{"indexed":[{"path","id"}],"skipped":[{"path","error"}],"recovered":[id]}`
        /// (recovered: images an interrupted run committed but never reported).
        #[arg(long)]
        json: bool,
    },
    /// Find the stored images closest to IMAGE, privately. The nodes open only the images
    /// within the cluster's distance limit, with their distances; of the rest, only how many.
    #[command(after_help = "Examples:\n  \
        obscura search --cluster /tmp/demo photo.jpg\n  \
        obscura search --cluster /tmp/demo photo.jpg --exhaustive --json")]
    Search {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The query image.
        image: PathBuf,
        /// Most results.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Largest Hamming distance reported (0..=64). The nodes reveal nothing beyond the
        /// cluster's own limit τ (`cluster init --max-distance`, 10 by default), so a larger
        /// value reports no more.
        #[arg(long, default_value_t = 10)]
        max_distance: u32,
        /// Scan every stored image instead of Stage-1's candidates: no band lookup, so no node
        /// sees which postings the query's bands hit (the matches it resolves it still sees);
        /// slower, and refused by nodes holding more than their `max_exhaustive` images.
        #[arg(long)]
        exhaustive: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild an image from any k nodes, checking every share. Nodes hand out a share to the
    /// data owner, to a querier whose own search matched the image (the proof is kept in the
    /// session by `obscura search`), or with the owner's grant.
    #[command(after_help = "Examples:\n  \
        obscura get --cluster /tmp/demo 7f3a...e1 --out /tmp/match.jpg\n  \
        obscura get --cluster /tmp/demo 7f3a...e1 --out /tmp/x.jpg --grant 1767225600:9c1d...")]
    Get {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The image id (32 hex digits).
        id: String,
        /// Where to write the image.
        #[arg(long)]
        out: PathBuf,
        /// The owner's grant (`EXPIRY:SIGNATURE`, from `obscura grant`).
        #[arg(long)]
        grant: Option<String>,
    },
    /// As the data owner: let one account fetch one image, until a time, without searching
    /// for it. Prints the grant, which that user passes to `obscura get --grant`.
    Grant {
        /// The cluster directory (with the owner's key).
        #[arg(long)]
        cluster: PathBuf,
        /// The account it is for.
        #[arg(long)]
        user: String,
        /// The image id.
        id: String,
        /// How long it holds, in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Remove an image from every node. Nodes take it only as an order signed with the data
    /// owner's key, so this client must hold it.
    Delete {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// The image id.
        id: String,
    },
    #[cfg(feature = "lab")]
    #[command(flatten)]
    Lab(lab::LabCommand),
    /// Print the pHash-64 of each file, as `0x%016x  FILE`.
    Hash {
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check the nodes' tamper-evident logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show how many images each node holds and which key versions nodes and keepers serve
    /// (logged out: only whether each node and keeper answers).
    Status {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Make node configurations, TLS material and keys (sealed) in a new directory.
    Init {
        /// The directory to create (must not exist).
        dir: PathBuf,
        /// Number of nodes (n). A search needs 2t + 1 nodes (t = k − 1), and enough that any
        /// two nodes that answer saw the same query checked: at least ⌈(n + t + 1) / 2⌉. With
        /// k = 3: 5 nodes search only when all are up, 6 with one down, 7 or 8 with two down.
        /// Rebuilding an image needs k; indexing needs every node.
        #[arg(long, default_value_t = obscura_cluster::deal::DEFAULT_NODES)]
        nodes: usize,
        /// Shares needed to rebuild an image (k); any k − 1 nodes together learn nothing.
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
        /// Keepers (m), each holding one Shamir share of every token key.
        #[arg(long, default_value_t = 3)]
        keepers: usize,
        /// Keepers needed to evaluate tokens (T); fewer learn nothing of the keys.
        #[arg(long, default_value_t = 2)]
        keeper_threshold: usize,
        /// Keeper j listens on keeper-base-port + j − 1 [default: base-port + 100].
        #[arg(long)]
        keeper_base_port: Option<u16>,
        /// Evaluations each user may ask of each keeper per hour (a search costs about
        /// 8 × 9 per node at radius 1, an image 8 per node).
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
    },
    /// Run every node and keeper of DIR as a child process until interrupted.
    #[cfg(feature = "lab")]
    Up {
        /// The cluster directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Fetch every node's hash-chained audit log and check its chain and signed checkpoints
    /// against the node's audit key; also check that no log lost the head verified last time.
    Verify {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// Print `{"nodes":[{"node","ok","entries","checkpoints","error"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Your own audit trail at each keeper: logins, secrets made, used, exported, deleted,
    /// signatures.
    Events {
        /// The cluster directory.
        #[arg(long)]
        cluster: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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

#[derive(Subcommand)]
enum KeeperCommand {
    /// Serve one keeper from its configuration file until interrupted: it evaluates blinded
    /// band elements with its shares of the token keys, within each client's budget.
    Run {
        /// The keeper's `keeper.json`.
        config: PathBuf,
    },
    /// A keeper refuses to start when its store is older than its state counter (restored from
    /// an old copy, which could bring back spent login attempts). After checking why, an admin
    /// accepts the restored store with this; the keeper must be stopped.
    AcceptRestore {
        /// The keeper's `keeper.json`.
        config: PathBuf,
    },
    /// On the keeper's own machine, with the keeper stopped: lift an account's login lockout
    /// (for when the only admin is locked out). Recorded in the keeper's audit log.
    Unlock {
        /// The keeper's `keeper.json`.
        config: PathBuf,
        /// The account.
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Move every node key to a new version without anyone learning a key: the keepers take
    /// fresh shares of k' = ρ·k, each node re-keys its stored band elements with its ρ and moves
    /// its postings in durable steps while searches go on under either version, then the old
    /// version is erased everywhere and client.json names the new one. The cluster must be up;
    /// every node and keeper is needed. Needs an admin session at the keepers and the data
    /// owner's key (nodes re-key only on its signed order). Interrupted, it resumes when run
    /// again.
    Rotate {
        /// The cluster directory (client.json is updated in it).
        #[arg(long)]
        cluster: PathBuf,
        /// Images each node moves per step (one durable transaction each).
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// Stop after this many steps, leaving both versions served; run again to go on.
        #[arg(long)]
        max_steps: Option<u64>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Serve one node from its configuration file until interrupted.
    Run {
        /// The node's `node.json`.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    // Parsed before the runtime starts: the allocator is set while this is the only thread.
    let cli = Cli::parse();
    let server = matches!(
        cli.command,
        Command::Node(NodeCommand::Run { .. }) | Command::Keeper(KeeperCommand::Run { .. })
    );
    if server {
        alloc::bound_retained_memory();
    } else {
        alloc::keep_freed_memory();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A client of the cluster in `dir`, with the user's keeper sessions if logged in.
fn client(dir: &Path) -> Result<Client, String> {
    let parts = obscura_client::config::load(dir).map_err(|e| e.to_string())?;
    let client = Client::new(parts).map_err(|e| e.to_string())?;
    client
        .attach_session(&account::session_path(dir))
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// Output piped into a reader that stops early (`obscura status | head -1`) ends the process
/// quietly, as the shell's other tools do (status 141, as for SIGPIPE), instead of a panic
/// report: `println!` panics when standard output is closed.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

pub(crate) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn image_id(s: &str) -> Result<ImageId, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an image id (32 hex digits)"))
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Cluster(ClusterCommand::Init {
            dir,
            nodes,
            threshold,
            host,
            base_port,
            tokens,
            keepers,
            keeper_threshold,
            keeper_base_port,
            keeper_budget,
            max_distance,
            queries_per_hour,
            fetches_per_hour,
        }) => {
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
            let availability = obscura_cluster::deal::Availability::of(nodes, threshold)
                .map(|a| a.describe())
                .unwrap_or_default();
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
                 {d}/owner holds the data owner's key: give a copy of {d} without it to users who \
                 only search",
                d = dir.display(),
            );
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Command::Cluster(ClusterCommand::Up { dir }) => lab::cluster_up(&dir).await,
        Command::Node(NodeCommand::Run { config }) => node_run(&config).await,
        Command::Keeper(KeeperCommand::Run { config }) => keeper_run(&config).await,
        Command::Keeper(KeeperCommand::AcceptRestore { config }) => {
            let (was, now) =
                obscura_keeper_server::accept_restore(&config).map_err(|e| e.to_string())?;
            println!("keeper store accepted: state counter {was} -> {now}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keeper(KeeperCommand::Unlock { config, user }) => {
            obscura_keeper_server::unlock_locally(&config, &user).map_err(|e| e.to_string())?;
            println!("{user} may log in again at this keeper");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Rotate {
            cluster,
            batch,
            max_steps,
        }) => {
            if batch == 0 {
                return Err("--batch must be at least 1".into());
            }
            keys::rotate(&cluster, &keys::RotateOptions { batch, max_steps }).await
        }
        Command::Index {
            cluster,
            paths,
            json,
        } => index(&cluster, &paths, json).await,
        Command::Search {
            cluster,
            image,
            top,
            max_distance,
            exhaustive,
            json,
        } => {
            let bytes = std::fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
            let client = client(&cluster)?;
            let out = if exhaustive {
                client
                    .search_exhaustive(&bytes, top, max_distance.min(64))
                    .await
            } else {
                client.search(&bytes, top, max_distance.min(64)).await
            }
            .map_err(|e| e.to_string())?;
            print_search(&out, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            cluster,
            id,
            out,
            grant,
        } => {
            let id = image_id(&id)?;
            if out.is_dir() {
                return Err(format!(
                    "--out {} is a folder: give the file to write, e.g. {}",
                    out.display(),
                    out.join(format!("{id}.png")).display()
                ));
            }
            let client = client(&cluster)?;
            let rebuilt = match grant {
                Some(g) => {
                    let (expires_at, signature) = g
                        .split_once(':')
                        .and_then(|(e, s)| {
                            Some((e.parse().ok()?, obscura_tokens::keyfile::from_hex(s)?))
                        })
                        .ok_or("--grant is EXPIRY:SIGNATURE, as `obscura grant` prints it")?;
                    client.get_granted(id, expires_at, signature).await
                }
                None => client.get(id).await,
            }
            .map_err(|e| e.to_string())?;
            for f in &rebuilt.faults {
                eprintln!("warning: node {} not used: {}", f.node, f.fault);
            }
            // Written beside the target under a fresh name, readable by this user only, then
            // renamed: no half-written output, and no file or link planted by another user at a
            // predictable name receives the image.
            obscura_cluster::files::write_private_atomic(&out, &rebuilt.image)
                .map_err(|e| e.to_string())?;
            println!("wrote {} ({} bytes)", out.display(), rebuilt.image.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Grant {
            cluster,
            user,
            id,
            hours,
        } => {
            let id = image_id(&id)?;
            let expires_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + hours.saturating_mul(3600);
            let signature = client(&cluster)?
                .grant(id, &user, expires_at)
                .map_err(|e| e.to_string())?;
            println!(
                "{expires_at}:{}",
                obscura_tokens::keyfile::to_hex(&signature)
            );
            eprintln!(
                "{user} may fetch {id} until Unix time {expires_at} with: obscura get --cluster \
                 DIR {id} --out FILE --grant <the line above>"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { cluster, id } => {
            let id = image_id(&id)?;
            client(&cluster)?
                .delete(id)
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "lab")]
        Command::Lab(command) => lab::run(command).await,
        Command::Hash { files } => {
            let mut ok = true;
            for f in files {
                match std::fs::read(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|b| obscura_phash::phash64(&b).map_err(|e| e.to_string()))
                {
                    Ok(h) => println!("{h}  {}", f.display()),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        ok = false;
                    }
                }
            }
            Ok(exit(ok))
        }
        Command::Register {
            cluster,
            user,
            roles,
        } => account::register(&cluster, &user, &roles).await,
        Command::Login { cluster, user } => account::login(&cluster, &user).await,
        Command::Passwd { cluster, user } => account::passwd(&cluster, &user).await,
        Command::Logout { cluster } => account::logout(&cluster).await,
        Command::Unlock { cluster, user } => account::unlock(&cluster, &user).await,
        Command::Secret(command) => account::secret(command).await,
        Command::Sign {
            cluster,
            key,
            file,
            json,
        } => account::sign(&cluster, &key, &file, json).await,
        Command::Audit(AuditCommand::Events { cluster, json }) => {
            account::events(&cluster, json).await
        }
        Command::Audit(AuditCommand::Verify { cluster, json }) => {
            let verdicts = audit::verify_cluster(&cluster, &client(&cluster)?)
                .await
                .map_err(|e| e.to_string())?;
            let ok = verdicts.iter().all(|v| v.outcome.is_ok());
            if json {
                let nodes: Vec<_> = verdicts
                    .iter()
                    .map(|v| match &v.outcome {
                        Ok(r) => json!({"node": v.node, "ok": true, "entries": r.entries,
                            "checkpoints": r.checkpoints, "error": null}),
                        Err(e) => json!({"node": v.node, "ok": false, "entries": null,
                            "checkpoints": null, "error": e.to_string()}),
                    })
                    .collect();
                println!("{}", json!({ "nodes": nodes }));
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
        Command::Status { cluster } => {
            let mut ok = true;
            let client = client(&cluster)?;
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
}

async fn keeper_run(config: &Path) -> Result<ExitCode, String> {
    let stop = shutdown_signal();
    release_freed_memory_periodically();
    let loaded = obscura_keeper_server::LoadedKeeper::load(config).map_err(|e| e.to_string())?;
    let listen = loaded.config.listen.clone();
    let keeper = loaded.config.keeper;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("keeper {keeper} cannot listen on {listen}: {e}"))?;
    eprintln!(
        "keeper {keeper} listening on {listen} ({} key shares)",
        loaded.shares.len()
    );
    obscura_keeper_server::serve(loaded, listener, stop)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("keeper {keeper} stopped");
    Ok(ExitCode::SUCCESS)
}

async fn node_run(config: &Path) -> Result<ExitCode, String> {
    // Before the store is opened, which takes a while for a large one: a stop sent meanwhile
    // then ends the server cleanly once it is up instead of killing it.
    let stop = shutdown_signal();
    release_freed_memory_periodically();
    let loaded = obscura_node::config::LoadedNode::load(config).map_err(|e| e.to_string())?;
    let listen = loaded.config.listen.clone();
    let node = loaded.config.node;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("node {node} cannot listen on {listen}: {e}"))?;
    eprintln!("node {node} listening on {listen}");
    obscura_node::server::serve(loaded, listener, stop)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("node {node} stopped");
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

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            out.extend(collect_files(&entries)?);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

async fn index(cluster: &Path, paths: &[PathBuf], json: bool) -> Result<ExitCode, String> {
    let mut client = client(cluster)?;
    // An image counts as indexed once it is printed: one committed but never printed (this
    // process killed in between) is reported by the next run instead of left unnamed.
    client.acknowledge_reports();
    let files = collect_files(paths)?;
    // Images of an earlier index that was interrupted are removed before new ones go in.
    let finished = client
        .finish_interrupted()
        .await
        .map_err(|e| e.to_string())?;
    if !finished.removed.is_empty() {
        eprintln!(
            "removed {} image(s) left at some nodes by an interrupted index",
            finished.removed.len()
        );
    }
    let recovered: Vec<String> = finished.recovered.iter().map(|id| id.to_string()).collect();
    for id in &recovered {
        if !json {
            println!("{id}  (indexed by an interrupted run that did not report it)");
        }
    }
    for (id, failures) in &finished.remaining {
        let nodes: Vec<String> = failures.iter().map(|f| f.node.to_string()).collect();
        eprintln!(
            "warning: image {id} of an interrupted index is still at node(s) {}; it is removed when they are back",
            nodes.join(", ")
        );
    }
    let bar = if !json && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let say = |line: String| {
        if json {
        } else if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let (mut indexed, mut skipped) = (Vec::new(), Vec::new());
    let mut cluster_failure = false;
    let client = std::sync::Arc::new(client);
    let acknowledging = client.clone();
    let acknowledge = |id| {
        if let Err(e) = acknowledging.acknowledge(id) {
            eprintln!("warning: {e}");
        }
    };
    let mut printed_later = Vec::new();
    let path = |i: usize| files[i].display().to_string();
    pipeline::index_all(
        &client,
        files.len(),
        |i| std::fs::read(&files[i]).map_err(|e| e.to_string()),
        |i, outcome| {
            cluster_failure |= matches!(outcome, pipeline::Outcome::Failed(_));
            match outcome {
                pipeline::Outcome::Indexed(id) => {
                    say(format!("{id}  {}", path(i)));
                    indexed.push((i, json!({"path": path(i), "id": id.to_string()})));
                    if json {
                        printed_later.push(id);
                    } else {
                        acknowledge(id);
                    }
                }
                pipeline::Outcome::Skipped(e) | pipeline::Outcome::Failed(e) => {
                    say(format!("skipped {}: {e}", path(i)));
                    skipped.push((i, json!({"path": path(i), "error": e})));
                }
            }
            bar.inc(1);
        },
    )
    .await;
    // Reported as they finish; listed in the order given.
    indexed.sort_by_key(|e| e.0);
    skipped.sort_by_key(|e| e.0);
    let indexed: Vec<_> = indexed.into_iter().map(|e| e.1).collect();
    let skipped: Vec<_> = skipped.into_iter().map(|e| e.1).collect();
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            json!({"indexed": indexed, "skipped": skipped, "recovered": recovered})
        );
        for id in printed_later {
            acknowledge(id);
        }
    } else {
        println!("indexed {}, skipped {}", indexed.len(), skipped.len());
    }
    // Nothing indexed of something asked is a failure, even when each file had its reason.
    let nothing = indexed.is_empty() && !skipped.is_empty();
    Ok(exit(!cluster_failure && !nothing))
}

fn print_search(out: &SearchOutcome, json: bool) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // A keeper that failed was replaced by another: the answer stands, the operator should know.
    for f in &out.keeper_faults {
        eprintln!("warning: keeper {} was not used: {}", f.keeper, f.reason);
    }
    if json {
        println!(
            "{}",
            json!({
                "results": out.matches.iter().map(|m| json!({"id": m.id.to_string(), "distance": m.distance})).collect::<Vec<_>>(),
                "candidates": out.candidates,
                "timings_ms": {"tokens": ms(out.tokens), "stage1": ms(out.stage1), "stage2": ms(out.stage2), "total": ms(out.total)},
                "keeper_faults": out.keeper_faults.iter().map(|f| json!({"keeper": f.keeper, "reason": f.reason})).collect::<Vec<_>>(),
                "bytes": {"sent": out.bytes_sent, "received": out.bytes_received},
            })
        );
        return;
    }
    if out.matches.is_empty() {
        println!("no stored image within the distance limit");
    }
    for m in &out.matches {
        println!("{}  distance {}", m.id, m.distance);
    }
    println!(
        "{} candidates; stage 1 {:.1} ms (tokens {:.1}), stage 2 {:.1} ms, total {:.1} ms; {} bytes sent, {} received",
        out.candidates,
        ms(out.stage1),
        ms(out.tokens),
        ms(out.stage2),
        ms(out.total),
        out.bytes_sent,
        out.bytes_received
    );
}
