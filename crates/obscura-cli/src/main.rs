//! `obscura`: private image similarity search over secret-shared images.
#![deny(unsafe_code)]

//!
//! Each command group lives in a module of its own, which owns its arguments and runs them:
//! `cluster` (init, up), `serve` (node and keeper servers), `keys` (rotation), `account`
//! (register, login, secrets, signing), `images` (index, search, get, grant, delete, hash),
//! `audit`, `attest`, `worker`, `status`, and, with the default feature `lab`, `lab` (demo, eval, bench, load).
//! This file holds only the command tree and what every command shares.

mod account;
mod alloc;
mod app;
mod attest;
mod audit;
mod cluster;
mod error;
mod images;
mod keys;
#[cfg(feature = "lab")]
mod lab;
mod ledger;
mod room;
mod serve;
mod status;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use obscura_client::Client;

use error::Failure;

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
        terminal (or each server's `node run` and `keeper run`), then index, search and get with `--cluster DIR`.\n\n\
        `--cluster` may be left out where OBSCURA_CLUSTER names the directory, or where \
        ~/.config/obscura/config.toml (or $OBSCURA_CONFIG) says `cluster = \"/path/to/DIR\"`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cluster (and, with the laboratory, run it on this machine).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Run one node.
    #[command(subcommand)]
    Node(serve::NodeCommand),
    /// Run a keeper (the token-key service).
    #[command(subcommand)]
    Keeper(serve::KeeperCommand),
    /// Manage the band-token keys of a running cluster.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    #[command(flatten)]
    Account(account::AccountCommand),
    #[command(flatten)]
    Images(images::ImageCommand),
    #[cfg(feature = "lab")]
    #[command(flatten)]
    Lab(lab::LabCommand),
    /// Check the nodes' tamper-evident logs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The cluster ledger: every registration, deletion and approval, signed by the data
    /// owner and cosigned by a majority of nodes; and the group whose key seals what only its
    /// members read there (labels).
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Appraise remote-attestation evidence (SGX, TDX, SEV-SNP, simulation) under a policy.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Run an attested worker, which takes secrets released to it by the keepers and runs
    /// clean-room functions on images the nodes release to it.
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// The clean room: run a function on stored images in an attested worker, with the data
    /// owner's approval, and hand its output only to the recipients.
    #[command(subcommand)]
    Room(room::RoomCommand),
    /// Serve the cluster to a browser on this machine: search by dropping an image, see the
    /// matches with thumbnails, index files, watch the nodes and keepers, log in and out.
    #[command(
        long_about = "Serve the cluster to a browser on this machine: search by dropping an \
        image and see the matches with their thumbnails, index files and folders, watch every \
        node and keeper, log in and out. This process does the cryptography, as the command \
        line does; the browser talks only to it.\n\n\
        It listens on loopback only and prints the address to open, which holds a token made \
        for this launch: every API call needs it (Authorization: Bearer). The same calls are \
        documented at /openapi.json (OpenAPI 3.1).\n\n\
        Examples:\n  \
        obscura serve --cluster /tmp/demo\n  \
        obscura serve --cluster /tmp/demo --listen 127.0.0.1:0 --json   # a free port, as JSON"
    )]
    Serve(app::Serve),
    /// Show how many images each node holds and which key versions nodes and keepers serve
    /// (logged out: only whether each node and keeper answers).
    Status(status::Status),
    /// Print a completion script for a shell.
    #[command(
        long_about = "Print a completion script for a shell, to standard output.\n\n\
        Examples:\n  \
        obscura completions bash > ~/.local/share/bash-completion/completions/obscura\n  \
        obscura completions zsh > ~/.zfunc/_obscura      # with fpath+=~/.zfunc in ~/.zshrc\n  \
        obscura completions fish > ~/.config/fish/completions/obscura.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    fn is_job(&self) -> bool {
        matches!(self, Command::Worker(w) if w.is_job())
    }

    async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            Command::Cluster(c) => c.run().await,
            Command::Node(c) => c.run().await,
            Command::Keeper(c) => c.run().await,
            Command::Keys(c) => c.run().await,
            Command::Account(c) => c.run().await,
            Command::Images(c) => c.run().await,
            #[cfg(feature = "lab")]
            Command::Lab(c) => lab::run(c).await,
            Command::Audit(c) => c.run().await,
            Command::Ledger(c) => c.run().await,
            Command::Attest(c) => c.run().await,
            Command::Worker(c) => c.run().await,
            Command::Room(c) => c.run().await,
            Command::Status(c) => c.run().await,
            Command::Serve(c) => c.run().await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "obscura",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    if let Err(e) = default_cluster() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // Parsed before the runtime starts: the allocator is set while this is the only thread.
    let cli = Cli::parse();
    let server = match &cli.command {
        Command::Node(c) => c.serves(),
        Command::Keeper(c) => c.serves(),
        Command::Serve(_) => true,
        _ => false,
    };
    if server {
        alloc::bound_retained_memory();
    } else {
        alloc::keep_freed_memory();
    }
    // A clean-room job is one process per function: it needs no threads of its own.
    let mut builder = if cli.command.is_job() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(code) => code,
        Err(e) => {
            e.report();
            ExitCode::FAILURE
        }
    }
}

/// The user's configuration file: `$OBSCURA_CONFIG`, else `$XDG_CONFIG_HOME/obscura/config.toml`,
/// else `~/.config/obscura/config.toml`.
fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OBSCURA_CONFIG") {
        return Some(p.into());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("obscura/config.toml"))
}

/// What the user's configuration file may say.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    /// The cluster directory commands use when given no `--cluster`.
    cluster: Option<PathBuf>,
}

/// Where the environment does not name a cluster already, take the configuration file's as
/// `OBSCURA_CLUSTER`, which every `--cluster` falls back on. No file is no default; a file
/// that does not parse is an error, not ignored.
fn default_cluster() -> Result<(), String> {
    if std::env::var_os("OBSCURA_CLUSTER").is_some() {
        return Ok(());
    }
    let Some(path) = config_path() else {
        return Ok(());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let config: UserConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(cluster) = config.cluster {
        // Before any other thread exists.
        std::env::set_var("OBSCURA_CLUSTER", cluster);
    }
    Ok(())
}

/// Unix time `at` as a local date and time with its offset, for people: "2026-12-03 22:06:34
/// +01:00".
fn local_time(at: u64) -> String {
    i64::try_from(at)
        .ok()
        .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_else(|| format!("Unix time {at}"))
}

/// `n` bytes for a person: `812 bytes`, `466.1 kB`, `12.0 MB`, `3.2 GB` (powers of 1000).
pub(crate) fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix time `at` in RFC 3339 (UTC), for JSON.
fn rfc3339(at: u64) -> Option<String> {
    let at = i64::try_from(at).ok()?;
    Some(
        chrono::DateTime::from_timestamp(at, 0)?.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// A client of the cluster in `dir`, with the user's keeper sessions if logged in.
fn client(dir: &Path) -> Result<Client, Failure> {
    let parts = obscura_client::config::load(dir).map_err(|e| e.to_string())?;
    let client = Client::new(parts)?;
    client.attach_session(&account::session_path(dir))?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_shows_an_example_in_its_help() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
            // Hidden ones are not for people (a clean-room job's process).
            let subs: Vec<_> = c
                .get_subcommands()
                .filter(|s| s.get_name() != "help" && !s.is_hide_set())
                .collect();
            if subs.is_empty() {
                *seen += 1;
                if !c.clone().render_long_help().to_string().contains("Example") {
                    missing.push(path.to_string());
                }
            }
            for s in subs {
                walk(s, &format!("{path} {}", s.get_name()), missing, seen);
            }
        }
        let mut cli = super::Cli::command();
        cli.build();
        let (mut missing, mut seen) = (Vec::new(), 0);
        walk(&cli, "obscura", &mut missing, &mut seen);
        assert!(seen > 40, "{seen} commands");
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn sizes_are_shown_with_units() {
        use super::size;
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(999), "999 bytes");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(466_123), "466.1 kB");
        assert_eq!(size(999_999), "1.0 MB");
        assert_eq!(size(12_000_000), "12.0 MB");
        assert_eq!(size(3_200_000_000), "3.2 GB");
        assert_eq!(size(u64::MAX), "18446744.1 TB");
    }

    #[test]
    fn times_are_shown_as_dates() {
        assert_eq!(
            super::rfc3339(1_796_095_054).as_deref(),
            Some("2026-12-01T03:17:34Z")
        );
        // Local: the date is within a day of UTC's, with an offset.
        let local = super::local_time(1_796_095_054);
        assert!(
            ["2026-11-30 ", "2026-12-01 ", "2026-12-02 "]
                .iter()
                .any(|d| local.starts_with(d)),
            "{local}"
        );
        assert!(local.ends_with(":00") || local.ends_with(":30") || local.ends_with(":45"));
        assert_eq!(
            super::local_time(u64::MAX),
            format!("Unix time {}", u64::MAX)
        );
    }
}
