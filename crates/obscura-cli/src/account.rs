//! `obscura register|login|logout|unlock`, `obscura secret ...`, `obscura sign` and
//! `obscura audit events`: the keepers as the user's key server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_client::Client;
use obscura_proto::SecretKind;
use obscura_tokens::keyfile::{from_hex, to_hex as hex};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::Failure;

/// Where a cluster's session file is: `OBSCURA_SESSION`, else `DIR/session.json`.
pub(crate) fn session_path(dir: &Path) -> PathBuf {
    std::env::var_os("OBSCURA_SESSION")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("session.json"))
}

/// The account commands, flattened into the top level.
#[derive(Subcommand)]
pub(crate) enum AccountCommand {
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
        #[arg(long, env = "OBSCURA_CLUSTER")]
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
    #[command(
        after_help = "Examples:\n  obscura login --cluster /tmp/demo --user ana\n  OBSCURA_PASSWORD=... obscura login --cluster /tmp/demo --user ana   # from a script"
    )]
    Login {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
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
    #[command(after_help = "Examples:\n  obscura passwd --cluster /tmp/demo --user ana")]
    Passwd {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The account's name.
        #[arg(long)]
        user: String,
    },
    /// End the sessions at the keepers and delete the session file.
    #[command(after_help = "Examples:\n  obscura logout --cluster /tmp/demo")]
    Logout {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
    },
    /// As an admin: lift an account's login lockout at every keeper.
    #[command(after_help = "Examples:\n  obscura unlock --cluster /tmp/demo --user ana")]
    Unlock {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The account.
        #[arg(long)]
        user: String,
    },
    /// Secrets held at the keepers as Shamir shares (any T of M rebuild one), and threshold
    /// signing keys; every operation is recorded in your audit trail (`obscura audit events`).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Sign FILE with a threshold signing key: T keepers each give a FROST (RFC 9591) share and
    /// the result is a standard Ed25519 signature. A keeper whose share is wrong is named.
    #[command(
        after_help = "Examples:\n  obscura sign --cluster /tmp/demo --key 4f1c...9a release.tar.gz\n  obscura sign --cluster /tmp/demo --key 4f1c...9a release.tar.gz --json"
    )]
    Sign {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
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
}

impl AccountCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            AccountCommand::Register {
                cluster,
                user,
                roles,
            } => register(&cluster, &user, &roles).await,
            AccountCommand::Login { cluster, user } => login(&cluster, &user).await,
            AccountCommand::Passwd { cluster, user } => passwd(&cluster, &user).await,
            AccountCommand::Logout { cluster } => logout(&cluster).await,
            AccountCommand::Unlock { cluster, user } => unlock(&cluster, &user).await,
            AccountCommand::Secret(command) => secret(command).await,
            AccountCommand::Sign {
                cluster,
                key,
                file,
                json,
            } => sign(&cluster, &key, &file, json).await,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Make a new random secret at the keepers (never shown here), or with --signing a
    /// threshold Ed25519 signing key made by distributed key generation among all keepers.
    #[command(
        after_help = "Examples:\n  obscura secret generate --cluster /tmp/demo --name backup-key\n  obscura secret generate --cluster /tmp/demo --name releases --signing"
    )]
    Generate {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// A name for it.
        #[arg(long)]
        name: String,
        /// Random bytes to make.
        #[arg(long, default_value_t = 32)]
        bytes: usize,
        /// A FROST signing key instead (use it with `obscura sign`).
        #[arg(long)]
        signing: bool,
        /// Release it only to attested workers whose appraisal this policy (JSON) accepts,
        /// never to you: `obscura secret release` hands it to such a worker.
        #[arg(long, value_name = "POLICY", conflicts_with = "signing")]
        release_to: Option<PathBuf>,
    },
    /// Store the contents of FILE as a secret at the keepers, split so that any T rebuild it.
    #[command(
        after_help = "Examples:\n  obscura secret import --cluster /tmp/demo --name api-token token.txt"
    )]
    Import {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// A name for it.
        #[arg(long)]
        name: String,
        /// The secret's file.
        file: PathBuf,
        /// Release it only to attested workers whose appraisal this policy (JSON) accepts,
        /// never to you.
        #[arg(long, value_name = "POLICY")]
        release_to: Option<PathBuf>,
    },
    /// Release a secret stored with --release-to to an attested worker: each keeper appraises
    /// the worker under the secret's policy and seals its share to the worker's key; the worker
    /// rebuilds it and says only its size. Releases and refusals are in the keepers' logs.
    #[command(after_help = "Example:\n  \
        obscura secret release --cluster /tmp/demo ID --worker http://127.0.0.1:7601")]
    Release {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The secret's id.
        id: String,
        /// The worker's address (`obscura worker run` prints it).
        #[arg(long)]
        worker: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a secret for use and write it to --out (recorded as a use).
    #[command(
        after_help = "Examples:\n  obscura secret get --cluster /tmp/demo 8d2e...41 --out /tmp/key.bin"
    )]
    Get {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The secret's id.
        id: String,
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuild a secret to take it out of the keepers' custody (recorded as an export).
    #[command(
        after_help = "Examples:\n  obscura secret export --cluster /tmp/demo 8d2e...41 --out /tmp/key.bin"
    )]
    Export {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The secret's id.
        id: String,
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Delete a secret at every keeper: each destroys the key that seals its share.
    #[command(after_help = "Examples:\n  obscura secret delete --cluster /tmp/demo 8d2e...41")]
    Delete {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The secret's id.
        id: String,
    },
    /// List your secrets.
    #[command(
        after_help = "Examples:\n  obscura secret list --cluster /tmp/demo\n  obscura secret list --cluster /tmp/demo --json"
    )]
    List {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn secret_id(s: &str) -> Result<[u8; 16], String> {
    from_hex(s).ok_or_else(|| format!("{s:?} is not a secret id (32 hex digits)"))
}

/// The password: `OBSCURA_PASSWORD`, else a line of standard input (not echoed on a terminal).
fn password(prompt: &str) -> Result<Zeroizing<String>, String> {
    password_from("OBSCURA_PASSWORD", prompt)
}

/// A password from the environment variable `var`, else a line of standard input (not echoed
/// on a terminal).
fn password_from(var: &str, prompt: &str) -> Result<Zeroizing<String>, String> {
    if let Ok(p) = std::env::var(var) {
        return Ok(Zeroizing::new(p));
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("{prompt}: ");
        std::io::stderr().flush().ok();
        // No echo while typing; restored whatever happens next.
        let _ = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status();
    }
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if terminal {
        let _ = std::process::Command::new("stty")
            .arg("echo")
            .stdin(std::process::Stdio::inherit())
            .status();
        eprintln!();
    }
    read.map_err(|e| format!("reading the password: {e}"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if trimmed.is_empty() {
        return Err("an empty password".into());
    }
    Ok(trimmed)
}

fn client(dir: &Path) -> Result<Client, Failure> {
    crate::client(dir)
}

fn logged_in(dir: &Path) -> Result<Client, Failure> {
    let client = client(dir)?;
    if client.user().is_none() {
        return Err(format!(
            "not logged in: run `obscura login --cluster {} --user NAME`",
            dir.display()
        )
        .into());
    }
    Ok(client)
}

/// The roles named in `names` (admin, owner, querier, auditor).
pub(crate) fn parse_roles(names: &[String]) -> Result<u8, String> {
    names.iter().try_fold(0u8, |acc, n| {
        obscura_proto::roles::from_name(n)
            .map(|r| acc | r)
            .ok_or_else(|| format!("{n:?} is not a role: admin, owner, querier or auditor"))
    })
}

/// `obscura register`: the cluster's first account (its admin, every role) with the bootstrap
/// code when nobody is logged in, else, by a logged-in admin, an account with `roles`.
pub async fn register(dir: &Path, user: &str, roles: &[String]) -> Result<ExitCode, Failure> {
    let client = client(dir)?;
    let wanted = parse_roles(roles)?;
    match client.user() {
        Some(admin) => {
            let pw = password(&format!("new password for {user}"))?;
            client.register(user, pw.as_bytes(), wanted).await?;
            println!(
                "registered {user} ({}) with every keeper (by {admin})",
                obscura_proto::roles::names(wanted).join(", ")
            );
        }
        None => {
            let code = obscura_cluster::deal::read_bootstrap(dir).map_err(|e| {
                format!(
                    "{e}: the first account needs the cluster's bootstrap code; later accounts \
                     are registered by an admin who is logged in"
                )
            })?;
            let pw = password(&format!("new password for {user}"))?;
            // The cluster's set-up ends here: the keepers take their token-key shares first.
            let provisioned = crate::cluster::provision(dir, &client).await?;
            if !provisioned.is_empty() {
                crate::cluster::report_provision(dir, &provisioned);
            }
            client.register_first(user, pw.as_bytes(), *code).await?;
            println!(
                "registered {user} with every keeper: the first account, the cluster's admin \
                 with every role (admin, owner, querier, auditor)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `obscura login`.
pub async fn login(dir: &Path, user: &str) -> Result<ExitCode, Failure> {
    let client = client(dir)?;
    let pw = password(&format!("password for {user}"))?;
    let report = client.login(user, pw.as_bytes()).await?;
    for f in &report.failures {
        eprintln!("{}", crate::error::keeper_fault(f));
    }
    println!(
        "logged in as {} at keepers {:?}; the session ({}) lasts until {}",
        report.user,
        report.keepers,
        session_path(dir).display(),
        crate::local_time(report.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// `obscura passwd`.
pub async fn passwd(dir: &Path, user: &str) -> Result<ExitCode, Failure> {
    let client = client(dir)?;
    let old = password(&format!("current password for {user}"))?;
    let new = password_from("OBSCURA_NEW_PASSWORD", &format!("new password for {user}"))?;
    if std::env::var_os("OBSCURA_NEW_PASSWORD").is_none() && std::io::stdin().is_terminal() {
        let again = password_from("OBSCURA_NEW_PASSWORD", "the new password again")?;
        if *again != *new {
            return Err("the two new passwords differ; nothing changed".into());
        }
    }
    if *old == *new {
        return Err("the new password is the current one; nothing changed".into());
    }
    let change = client
        .change_password(user, old.as_bytes(), new.as_bytes())
        .await
        .map_err(|e| Failure::then(e, "where the change went through, the new password holds"))?;
    if !change.changed.is_empty() {
        println!(
            "keepers {:?} took the new password; your other sessions there ended",
            change.changed
        );
    }
    println!(
        "logged in as {user} with the new password at keepers {:?}",
        change.login.keepers
    );
    if change.left.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &change.left {
        eprintln!("{}", crate::error::keeper_fault(f));
    }
    eprintln!(
        "these keepers still take the old password: run `obscura passwd` again when they answer"
    );
    Ok(ExitCode::FAILURE)
}

/// `obscura logout`.
pub async fn logout(dir: &Path) -> Result<ExitCode, Failure> {
    let client = client(dir)?;
    let Some(user) = client.user() else {
        println!("not logged in");
        return Ok(ExitCode::SUCCESS);
    };
    for f in client.logout().await? {
        eprintln!(
            "keeper {}: {} (its session expires on its own)",
            f.keeper, f.fault
        );
    }
    println!("logged out {user}");
    Ok(ExitCode::SUCCESS)
}

/// `obscura unlock`.
pub async fn unlock(dir: &Path, user: &str) -> Result<ExitCode, Failure> {
    logged_in(dir)?.unlock(user).await?;
    println!("{user} may log in again");
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("{}: {e} (it is never overwritten)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `obscura secret ...`.
pub async fn secret(command: SecretCommand) -> Result<ExitCode, Failure> {
    match command {
        SecretCommand::Generate {
            cluster,
            name,
            bytes,
            signing,
            release_to,
        } => {
            let client = logged_in(&cluster)?;
            let policy = release_to.as_deref().map(read_policy).transpose()?;
            if signing {
                let (id, public) = client.signing_key_generate(&name).await?;
                println!(
                    "signing key {} ({name}), Ed25519 public key {}",
                    hex(&id),
                    hex(&public)
                );
            } else {
                if !(1..=4096).contains(&bytes) {
                    return Err("--bytes must be 1..=4096".into());
                }
                let mut secret = Zeroizing::new(vec![0u8; bytes]);
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
                let id = match &policy {
                    Some(p) => {
                        client
                            .secret_put_released(&name, &secret, "generate", p)
                            .await?
                    }
                    None => client.secret_put(&name, &secret, "generate").await?,
                };
                println!(
                    "secret {} ({name}, {bytes} random bytes){}",
                    hex(&id),
                    released_note(policy.as_ref())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Import {
            cluster,
            name,
            file,
            release_to,
        } => {
            let client = logged_in(&cluster)?;
            let policy = release_to.as_deref().map(read_policy).transpose()?;
            let secret = Zeroizing::new(
                std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?,
            );
            if secret.is_empty() || secret.len() > 60 << 10 {
                return Err(format!("{}: a secret is 1 byte to 60 KiB", file.display()).into());
            }
            let id = match &policy {
                Some(p) => {
                    client
                        .secret_put_released(&name, &secret, "import", p)
                        .await?
                }
                None => client.secret_put(&name, &secret, "import").await?,
            };
            println!(
                "secret {} ({name}, {} bytes){}",
                hex(&id),
                secret.len(),
                released_note(policy.as_ref())
            );
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Release {
            cluster,
            id,
            worker,
            json,
        } => {
            let client = logged_in(&cluster)?;
            let id = secret_id(&id)?;
            let report = client.secret_release(&id, &worker).await?;
            for f in &report.failures {
                eprintln!("warning: {}", crate::error::keeper_fault(f));
            }
            let r = &report.received;
            if json {
                println!(
                    "{}",
                    json!({"secret": r.secret, "worker": worker, "bytes": r.bytes,
                        "released_by": report.released_by,
                        "liars": r.liars,
                        "failures": report.failures.iter().map(crate::error::keeper_fault).collect::<Vec<_>>()})
                );
            } else {
                println!(
                    "secret {} released to worker {worker} by keepers {:?}: it rebuilt {} bytes, and their check passed",
                    r.secret, report.released_by, r.bytes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Get { cluster, id, out } => secret_out(&cluster, &id, &out, false).await,
        SecretCommand::Export { cluster, id, out } => secret_out(&cluster, &id, &out, true).await,
        SecretCommand::Delete { cluster, id } => {
            let client = logged_in(&cluster)?;
            let id = secret_id(&id)?;
            let failed = client.secret_delete(&id).await?;
            for f in &failed {
                eprintln!("keeper {}: {} (run delete again)", f.keeper, f.fault);
            }
            println!("secret {} deleted", hex(&id));
            Ok(if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        SecretCommand::List { cluster, json } => {
            let items = logged_in(&cluster)?.secret_list().await?;
            if json {
                let list: Vec<_> = items
                    .iter()
                    .map(|i| {
                        json!({"id": hex(&i.id), "name": i.name, "kind": kind(i.kind),
                            "created": i.created})
                    })
                    .collect();
                println!("{}", json!({ "secrets": list }));
            } else if items.is_empty() {
                println!("no secrets");
            } else {
                for i in &items {
                    println!("{}  {:7}  {}", hex(&i.id), kind(i.kind), i.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `obscura secret get|export`: they differ only in what the keepers record.
pub async fn secret_out(
    dir: &Path,
    id: &str,
    out: &Path,
    export: bool,
) -> Result<ExitCode, Failure> {
    let client = logged_in(dir)?;
    let id = secret_id(id)?;
    let opened = client.secret_get(&id, export).await?;
    for f in &opened.faults {
        eprintln!("{}", crate::error::keeper_fault(f));
    }
    write_private(out, &opened.secret)?;
    println!(
        "secret {} ({}) {} to {}",
        hex(&id),
        opened.name,
        if export { "exported" } else { "written" },
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn kind(k: SecretKind) -> &'static str {
    match k {
        SecretKind::Data => "data",
        SecretKind::Signing => "signing",
    }
}

/// `obscura sign`.
pub async fn sign(dir: &Path, key: &str, file: &Path, json: bool) -> Result<ExitCode, Failure> {
    let client = logged_in(dir)?;
    let id = secret_id(key)?;
    let message = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let signed = client.sign(&id, &message).await?;
    for f in &signed.faults {
        eprintln!("{}", crate::error::keeper_fault(f));
    }
    if json {
        println!(
            "{}",
            json!({"signature": hex(&signed.signature), "public_key": hex(&signed.public_key),
                "signers": signed.signers,
                "faults": signed.faults.iter().map(|f| json!({"keeper": f.keeper, "reason": f.fault.to_string(), "misbehaved": f.fault.is_misbehaviour()})).collect::<Vec<_>>()})
        );
    } else {
        println!("signature  {}", hex(&signed.signature));
        println!("public key {}", hex(&signed.public_key));
        println!("signed by keepers {:?} (Ed25519, RFC 8032)", signed.signers);
    }
    Ok(ExitCode::SUCCESS)
}

/// `obscura audit events`.
pub async fn events(dir: &Path, json: bool) -> Result<ExitCode, Failure> {
    let per_keeper = logged_in(dir)?.user_events().await?;
    if json {
        let list: Vec<_> = per_keeper
            .iter()
            .map(|(j, events)| {
                json!({"keeper": j, "events": events.iter().map(|e| json!({"time": e.time,
                    "action": e.action, "secret": e.secret.map(|s| hex(&s)), "ok": e.ok}))
                    .collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", json!({ "keepers": list }));
    } else {
        for (j, events) in &per_keeper {
            println!("keeper {j}:");
            for e in events {
                println!(
                    "  {}  {}{}",
                    e.time,
                    e.action,
                    e.secret
                        .map(|s| format!(" {}", hex(&s)))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A release policy file.
fn read_policy(path: &Path) -> Result<obscura_attest::Policy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    obscura_attest::Policy::from_json(&text)
        .map_err(|e| Failure::Said(format!("{}: {e}", path.display())))
}

fn released_note(policy: Option<&obscura_attest::Policy>) -> String {
    policy.map_or_else(String::new, |p| {
        format!(
            "; released only to attested workers under policy {:?} version {}",
            p.name, p.version
        )
    })
}
