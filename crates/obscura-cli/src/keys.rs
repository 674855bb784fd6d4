//! `obscura keys rotate`: move a running cluster to a new token key version.
//!
//! The plan (`ρ` of the cluster key and a fresh sharing of zero) is drawn once, sealed into
//! `DIR/rotation.sealed` before anything is sent, and erased when the rotation finishes; a run
//! that stops anywhere (a crash, a node down, `--max-steps`) resumes from it when run again.
//! See `obscura_client::rotation` for the steps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use obscura_client::config::{self, TokenKind};
use obscura_client::rotation::{Moves, NodeRotation, Phase, RotationPlan};

use crate::error::Failure;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Move every token key to a new version without anyone learning a key: the keepers take
    /// fresh shares of k' = ρ·k, each node re-keys its stored band elements with the same ρ and moves
    /// its postings in durable steps while searches go on under either version, then the old
    /// version is erased everywhere and client.json names the new one. The cluster must be up;
    /// every node and keeper is needed. Needs an admin session at the keepers and the data
    /// owner's key (nodes re-key only on its signed order). Interrupted, it resumes when run
    /// again.
    #[command(
        after_help = "Examples:\n  obscura keys rotate --cluster /tmp/demo\n  obscura keys rotate --cluster /tmp/demo --batch 500 --max-steps 10   # part of it now"
    )]
    Rotate {
        /// The cluster directory (client.json is updated in it).
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// Images each node moves per step (one durable transaction each).
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// Stop after this many steps, leaving both versions served; run again to go on.
        #[arg(long)]
        max_steps: Option<u64>,
    },
}

impl KeysCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            KeysCommand::Rotate {
                cluster,
                batch,
                max_steps,
            } => {
                if batch == 0 {
                    return Err("--batch must be at least 1".into());
                }
                rotate(&cluster, &RotateOptions { batch, max_steps }).await
            }
        }
    }
}

/// Where a rotation's plan is kept while it runs.
pub(crate) const PLAN_FILE: &str = "rotation.sealed";

/// What to do.
pub(crate) struct RotateOptions {
    /// Images each node moves per step (one durable transaction).
    pub batch: u32,
    /// Stop after this many move steps (run again to go on).
    pub max_steps: Option<u64>,
}

/// Rotate (or resume rotating) the token keys of the cluster in `dir`.
///
/// # Errors
/// A message saying what failed; the rotation can be resumed by running again.
pub(crate) async fn rotate(dir: &Path, opt: &RotateOptions) -> Result<ExitCode, Failure> {
    let config = config::read_config(dir).map_err(|e| e.to_string())?;
    if config.tokens != TokenKind::Voprf {
        return Err(
            "this cluster uses HMAC tokens: every client holds the token keys, and there is no \
             key version to rotate (make a VOPRF cluster with `cluster init --tokens voprf`)"
                .into(),
        );
    }
    // Shares still waiting for a keeper's receipt (its answer lost, say) would outlive a
    // rotation in the owner's folder, the retired version's included: deliver them first.
    if config::pending_provision(dir)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        let client = crate::client(dir)?;
        crate::cluster::report_provision(dir, &crate::cluster::provision(dir, &client).await?);
        if let Some(pending) = config::pending_provision(dir).map_err(|e| e.to_string())? {
            let keepers: Vec<u8> = pending.keepers.iter().map(|a| a.keeper).collect();
            return Err(format!(
                "keepers {keepers:?} have not confirmed their token-key shares, which still wait \
                 in {}: a rotation now would leave them there after the old version is erased; \
                 run `obscura cluster provision --cluster {}` until every keeper has",
                dir.join(obscura_cluster::provision::PROVISION_FILE)
                    .display(),
                dir.display()
            )
            .into());
        }
    }
    let wrapping = config::wrapping_key(dir, &config).map_err(|e| e.to_string())?;
    // The client first: a directory it cannot use (one made by an older version, say) is
    // refused before a plan is drawn and left behind.
    let client = crate::client(dir)?;
    let plan_path = dir.join(PLAN_FILE);
    let (plan, resumed) = match std::fs::read(&plan_path) {
        Ok(sealed) => (
            RotationPlan::open(&sealed, &wrapping)
                .map_err(|e| format!("{}: {e}", plan_path.display()))?,
            true,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let plan = RotationPlan::next_for(&config, &mut rand_core::OsRng)
                .map_err(|e| e.to_string())?;
            let sealed = plan
                .seal(&wrapping, &mut rand_core::OsRng)
                .map_err(|e| e.to_string())?;
            obscura_cluster::files::write_atomic(&plan_path, &sealed).map_err(|e| e.to_string())?;
            eprintln!(
                "rotating the token keys from version {} to {} (the plan is kept sealed in {} \
                 until the rotation finishes)",
                plan.from,
                plan.to,
                plan_path.display()
            );
            (plan, false)
        }
        Err(e) => return Err(format!("{}: {e}", plan_path.display()).into()),
    };
    let (from, to) = (plan.from, plan.to);
    // The phase is the plan's and the clients' version's to say, not this command's to guess.
    let phase = Phase::of(plan, config.key_version).map_err(|e| {
        format!(
            "{}: {e}; remove it only if you are sure",
            plan_path.display()
        )
    })?;
    if resumed {
        eprintln!("resuming the rotation from key version {from} to {to}");
    }
    let mut moved = (0u64, 0u64);
    let mut moving_s = 0f64;
    let switched = match phase {
        Phase::Switched(switched) => switched,
        Phase::Planned(planned) => {
            let rekeyed = planned.rekey_keepers(&client).await.map_err(resumable)?;
            eprintln!(
                "{} keepers hold shares of version {to}; their public shares check out",
                config.keepers.len(),
            );
            let mut moving = rekeyed.begin(&client).await.map_err(resumable)?;
            let before = sum(moving.began());
            let total: u64 = moving.began().iter().map(|r| r.total).sum();
            eprintln!(
                "{} nodes moved their band elements and serve both versions; moving {total} \
                 image records",
                moving.began().len()
            );
            let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                let bar = indicatif::ProgressBar::new(total);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {pos}/{len} images {elapsed} ({per_sec})",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message("moving");
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let mut steps = 0u64;
            let t0 = Instant::now();
            let all_moved = loop {
                let now = sum(moving.state());
                moving = match moving.all_moved() {
                    Moves::Done(all) => {
                        moved = (now.0 - before.0, now.1 - before.1);
                        break all;
                    }
                    Moves::Left(still) => still,
                };
                if opt.max_steps.is_some_and(|m| steps >= m) {
                    bar.abandon();
                    eprintln!(
                        "stopped after {steps} steps ({} of {total} images moved); both \
                         versions are served meanwhile; run `obscura keys rotate --cluster {}` \
                         again to go on",
                        sum(moving.state()).0,
                        dir.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                moving = moving.step(&client, opt.batch).await.map_err(resumable)?;
                steps += 1;
                let (images, postings) = sum(moving.state());
                bar.set_position(images.min(total));
                if bar.is_hidden() {
                    eprintln!("moved {images} of {total} images ({postings} postings)");
                }
            };
            bar.finish_and_clear();
            moving_s = t0.elapsed().as_secs_f64();
            let switched = all_moved.switch(dir).map_err(resumable)?;
            eprintln!("client.json now uses key version {to}");
            switched
        }
    };
    switched.finish(&client).await.map_err(resumable)?;
    std::fs::remove_file(&plan_path).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    println!(
        "rotated to key version {to}: {} image records and {} postings moved in {moving_s:.2} s \
         ({:.0} postings/s); version {from} is erased at every node and keeper",
        moved.0,
        moved.1,
        moved.1 as f64 / moving_s.max(1e-9),
    );
    // The rotation stands; the ledger records the version every party now uses.
    let version = obscura_ledger::entry::Transition::KeyVersion { version: to };
    let (entered, _) = crate::ledger::enter(dir, &client, vec![version], false).await;
    Ok(crate::exit(entered))
}

fn sum(state: &[NodeRotation]) -> (u64, u64) {
    state
        .iter()
        .fold((0, 0), |(i, p), r| (i + r.moved, p + r.postings))
}

fn resumable(e: obscura_client::Error) -> Failure {
    Failure::then(
        e,
        "the rotation is not finished: fix this and run the same command again to resume",
    )
}
