//! The laboratory's commands (the default feature `lab`): demo, eval, bench, load and
//! `cluster up`, run by [`obscura_lab`] inside this binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use obscura_lab::{bench, demo, eval, load};

use crate::cluster::Tokens;
use crate::error::Failure;
use crate::exit;
use crate::serve::shutdown_signal;

/// The laboratory's commands, flattened into the top level.
#[derive(Subcommand)]
pub enum LabCommand {
    /// Run the whole system on this machine and check it: a temporary 6-node cluster of real
    /// node processes on loopback indexes the photos, searches privately with edited variants
    /// of each (JPEG re-encode, half size, noise, brightness), prints recall and latencies,
    /// rebuilds a match byte for byte, verifies the audit logs and shuts down. Exits non-zero if
    /// any check fails.
    #[command(
        after_help = "Examples:\n  obscura demo\n  obscura demo --photos ~/Pictures --json --keep"
    )]
    Demo {
        /// Folder of photos (default: the repository's testdata/photos).
        #[arg(long)]
        photos: Option<PathBuf>,
        /// Print one JSON report instead of the table.
        #[arg(long)]
        json: bool,
        /// Keep the temporary cluster and the node logs instead of deleting them.
        #[arg(long)]
        keep: bool,
        /// Band tokens of the temporary cluster: voprf (keepers) or hmac.
        #[arg(long, value_enum, default_value_t = Tokens::Voprf)]
        tokens: Tokens,
    },
    /// Measure accuracy against plaintext search: every photo's 20 "medium" samples are indexed
    /// into a temporary 6-node cluster and each queries the others, privately and in plaintext.
    #[command(long_about = "Measure what privacy costs in accuracy.\n\n\
        Every photo in --photos yields 20 samples (the original and 19 edits: JPEG, WebP, \
        rotation, crop, perspective, resampling, gamma, brightness, contrast, noise, \
        salt-and-pepper, motion blur, watermark, occlusion; seed 2025). All are indexed into a \
        temporary 3-of-6 cluster of real node processes, and every sample queries the others in \
        each Stage-1 mode; the same pHashes are ranked in plaintext as the baseline. Prints \
        P@1/5/10, R@1/5/10 and mAP per transform, Stage-1 keep rate, latencies and bytes, and \
        writes summary.json, recall.svg and latency.svg to --out. Exits non-zero when the \
        default mode misses the goal: private R@10 >= 0.99 x plaintext on every transform.")]
    #[command(
        after_help = "Examples:\n  obscura eval --out /tmp/eval\n  obscura eval --photos ~/Pictures --json"
    )]
    Eval {
        /// Folder of photos (default: the repository's testdata/photos).
        #[arg(long)]
        photos: Option<PathBuf>,
        /// Folder for summary.json and the plots.
        #[arg(long, default_value = "eval-out")]
        out: PathBuf,
        /// Print the summary as JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Stage-1 modes to measure, comma-separated: exact (one lookup per band), probe1 (the
        /// default: radius-1 multi-probe), probe2.
        #[arg(long, value_delimiter = ',', default_value = "exact,probe1,probe2")]
        modes: Vec<String>,
        /// Keep the temporary cluster and the node logs.
        #[arg(long)]
        keep: bool,
        /// Band tokens of the temporary cluster: voprf (keepers) or hmac.
        #[arg(long, value_enum, default_value_t = Tokens::Voprf)]
        tokens: Tokens,
    },
    /// Measure speed: each figure beside its ceiling or plaintext baseline, on this machine.
    #[command(
        long_about = "Measure speed on this machine: each figure beside its ceiling or \
        plaintext baseline, measured in the same run.\n\n\
        In this process: GF(2^8) sharing against the raw multiply-add rate, decode + pHash, \
        everything indexing computes, HMAC band tokens, Stage-2 at a node against a plaintext \
        popcount. Through a temporary 3-of-6 cluster of real node processes on loopback: \
        indexing, rebuilding a 1 MB image, query latency at each --sizes N (synthetic \
        images are written into the stopped nodes' stores to reach N) against a plaintext \
        brute-force scan, and, last, query latency with one node stopped. Exits non-zero when a \
        goal is missed. Takes a few minutes at N = 10^5. With --database a second cluster, whose \
        nodes keep their stores in PostgreSQL, is loaded with the same images at the largest N \
        and asked the same searches in turn with the first (redb), against a goal of 1.5× its \
        p50.\n\n\
        Examples:\n  obscura bench --sizes 1000,100000 --queries 50\n  \
        obscura bench --sizes 100000 --database postgres://me:pw@127.0.0.1:5432/postgres"
    )]
    Bench {
        /// Folder of photos (default: the repository's testdata/photos).
        #[arg(long)]
        photos: Option<PathBuf>,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Stored images at which query latency is measured, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Queries at each size.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Keep the temporary cluster and the node logs.
        #[arg(long)]
        keep: bool,
        /// Band tokens of the temporary cluster: voprf (keepers) or hmac.
        #[arg(long, value_enum, default_value_t = Tokens::Voprf)]
        tokens: Tokens,
        /// Compare with nodes that keep their stores in PostgreSQL: a server URL of a role that
        /// may create databases (postgres://user:password@127.0.0.1:5432/postgres); each node
        /// of a second cluster gets a fresh database of its own there, dropped afterwards.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Hold a temporary cluster under load: several clients searching and one indexing.
    #[command(
        long_about = "Hold a temporary 3-of-6 cluster (real node and keeper processes on \
        loopback) under load for --seconds: --searchers clients, each logged in as its own \
        user, search with the photos in a loop while one client indexes them again and again, \
        all through the library in this process. Reports searches per second, latency \
        p50/p95/p99, images indexed, every error, and each process's memory after the warm-up \
        (the first fifth of the run, in which each node's page cache, 64 MiB by default, fills) \
        and at the end (each the mean over a tenth of the run), and at most, and whether it \
        stayed within 10 % after the warm-up. Exits \
        non-zero on any error or a search that did not find its photo.\n\n\
        Examples:\n  obscura load --seconds 30\n  obscura load --seconds 600 --searchers 8 --json"
    )]
    Load {
        /// Folder of photos (default: the repository's testdata/photos).
        #[arg(long)]
        photos: Option<PathBuf>,
        /// How long to hold the load.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Clients searching at once.
        #[arg(long, default_value_t = 4)]
        searchers: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Keep the temporary cluster and the node logs.
        #[arg(long)]
        keep: bool,
    },
}

/// Run one of the laboratory's commands.
pub(crate) async fn run(command: LabCommand) -> Result<ExitCode, Failure> {
    match command {
        LabCommand::Demo {
            photos,
            json,
            keep,
            tokens,
        } => {
            let ok = demo::run(demo::DemoOptions {
                photos,
                json,
                keep,
                tokens: tokens.into(),
            })
            .await?;
            Ok(exit(ok))
        }
        LabCommand::Eval {
            photos,
            out,
            json,
            modes,
            keep,
            tokens,
        } => {
            let modes = modes
                .iter()
                .map(|m| eval::Mode::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            let ok = eval::run(eval::EvalOptions {
                photos,
                out,
                json,
                modes,
                keep,
                tokens: tokens.into(),
            })
            .await?;
            Ok(exit(ok))
        }
        LabCommand::Bench {
            photos,
            json,
            sizes,
            queries,
            keep,
            tokens,
            database,
        } => {
            let ok = bench::run(bench::BenchOptions {
                photos,
                json,
                sizes,
                queries,
                keep,
                tokens: tokens.into(),
                database,
            })
            .await?;
            Ok(exit(ok))
        }
        LabCommand::Load {
            photos,
            seconds,
            searchers,
            json,
            keep,
        } => {
            let ok = load::run(load::LoadOptions {
                photos,
                seconds,
                searchers,
                json,
                keep,
            })
            .await?;
            Ok(exit(ok))
        }
    }
}

/// `obscura cluster up`: every node and keeper of `dir` as a child process until interrupted.
pub(crate) async fn cluster_up(dir: &Path) -> Result<ExitCode, Failure> {
    let mut running = obscura_lab::local::Running::start(dir, None)?;
    let (n, m) = running.counts();
    eprintln!(
        "{n} nodes and {m} keepers running from {}; Ctrl-C stops them",
        dir.display()
    );
    // A member that dies is reported, and the others keep serving: with up to n − k nodes
    // down images can still be rebuilt, and with up to m − T keepers down tokens still come.
    let mut stop = std::pin::pin!(shutdown_signal());
    let outcome = loop {
        tokio::select! {
            () = &mut stop => break Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                for (member, status) in running.newly_exited() {
                    eprintln!("{member} exited ({status}); the others keep running");
                }
                if running.all_exited() {
                    break Err(Failure::from("every node and keeper has exited"));
                }
            }
        }
    };
    for (member, r) in running.stop().await {
        if let Err(e) = r {
            eprintln!("{member}: {e}");
        }
    }
    outcome
}
