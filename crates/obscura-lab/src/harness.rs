//! What the demo, the evaluation and the benchmark share: photos, scratch folders, progress
//! output, latency spreads, and a temporary cluster of real node processes on loopback.

use obscura_client::config::TokenKind;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

use crate::Error;

use obscura_client::Client;
use serde_json::{json, Value};

use crate::local;

/// The photos folder: the one given, else the repository's `testdata/photos`.
pub fn photos_dir(given: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = given {
        return if p.is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("{}: not a folder", p.display()).into())
        };
    }
    let candidates = [
        PathBuf::from("testdata/photos"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/photos"),
        PathBuf::from("../shared/testdata/photos"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| "no photos folder found; pass --photos DIR".into())
}

/// A base port with `n` consecutive ports free on loopback, from a random place: two runs
/// started at once (seeded by process ids, which follow each other, they probed overlapping
/// ranges) then rarely pick ranges that overlap before either has bound its ports.
pub fn free_base_port(n: u16) -> Result<u16, Error> {
    let seed = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
    // Below 32768, where Linux draws the ports of outgoing connections, which could take one
    // of a restarted server's ports meanwhile.
    (0..500u16)
        .map(|i| 20_000 + (seed.wrapping_add(i.wrapping_mul(97))) % (32_768 - 20_000 - n))
        .find(|&base| (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .ok_or_else(|| format!("no {n} consecutive free ports on 127.0.0.1").into())
}

/// Removes a scratch folder, and the databases made for it, when dropped, unless asked to keep
/// them.
pub struct Scratch {
    pub dir: PathBuf,
    pub keep: bool,
    /// PostgreSQL databases made for the nodes.
    pub databases: Vec<String>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        std::fs::remove_dir_all(&self.dir).ok();
        for url in &self.databases {
            if let Err(e) = obscura_store::pg::drop_database(url) {
                eprintln!("the database {url} stays: {e}");
            }
        }
    }
}

/// Says what is happening: a progress bar on a terminal, plain lines otherwise, nothing with
/// `--json` (whose output is the one object at the end).
pub struct Progress {
    pub json: bool,
    pub tty: bool,
}

impl Progress {
    pub fn say(&self, line: &str) {
        if !self.json {
            println!("{line}");
        }
    }

    pub fn bar(&self, len: usize, what: &str) -> indicatif::ProgressBar {
        if self.json || !self.tty {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    }
}

pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
    pub decoded: image::DynamicImage,
}

pub fn load_photos(dir: &Path, progress: &Progress) -> Result<Vec<Photo>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut photos = Vec::new();
    for p in paths {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        // The same checks (and limits) as indexing, before decoding for the variants.
        if let Err(e) = obscura_phash::phash64(&bytes) {
            progress.say(&format!("skipping {}: {e}", p.display()));
            continue;
        }
        let decoded = image::load_from_memory(&bytes)
            .map_err(|e| format!("{}: cannot decode for variants: {e}", p.display()))?;
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        photos.push(Photo {
            name,
            bytes,
            decoded,
        });
    }
    if photos.len() < 2 {
        return Err(format!(
            "{} holds {} usable photo(s); at least 2 are needed",
            dir.display(),
            photos.len()
        )
        .into());
    }
    Ok(photos)
}

pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// Median, 95th percentile and mean of a set of latencies, in milliseconds.
pub struct Spread {
    pub p50: f64,
    pub p95: f64,
    pub mean: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread {
            p50: percentile(&v, 50),
            p95: percentile(&v, 95),
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        }
    }

    pub fn json(&self) -> Value {
        json!({"p50": self.p50, "p95": self.p95, "mean": self.mean})
    }
}

impl Progress {
    /// Progress for a command: bars only on a terminal, silence with `--json`.
    pub fn new(json: bool) -> Progress {
        Progress {
            json,
            tty: std::io::stderr().is_terminal(),
        }
    }
}

/// A temporary cluster of the default shape (3-of-6) whose nodes (and, with VOPRF tokens,
/// 2-of-3 keepers) run as `obscura node run` and `obscura keeper run` processes on loopback, in
/// a scratch folder removed afterwards unless kept.
pub struct LocalCluster {
    /// Its nodes.
    n: usize,
    /// Whether its nodes keep their stores in PostgreSQL.
    in_database: bool,
    pub scratch: Scratch,
    pub dir: PathBuf,
    pub tokens: TokenKind,
    running: Option<local::Running>,
    /// The operator account's password, once registered: every client logs in with it.
    operator: Option<Zeroizing<String>>,
    /// The keepers that took their token-key shares from this harness, once appraised.
    pub provisioned: Vec<u8>,
}

/// The account a local cluster's clients log in as.
pub const OPERATOR: &str = "operator";

impl LocalCluster {
    /// Create the cluster in a fresh folder named after `what` and start its nodes and keepers.
    pub fn start(what: &str, keep: bool, tokens: TokenKind) -> Result<LocalCluster, Error> {
        Self::start_with_nodes(what, keep, tokens, obscura_cluster::deal::DEFAULT_NODES)
    }

    /// [`start`](Self::start) with `n` nodes (and the default threshold).
    pub fn start_with_nodes(
        what: &str,
        keep: bool,
        tokens: TokenKind,
        n: usize,
    ) -> Result<LocalCluster, Error> {
        Self::start_on(what, keep, tokens, n, None)
    }

    /// [`start_with_nodes`](Self::start_with_nodes), the nodes' stores in fresh databases of
    /// the PostgreSQL server `database` names, when it names one.
    pub fn start_on(
        what: &str,
        keep: bool,
        tokens: TokenKind,
        n: usize,
        database: Option<&str>,
    ) -> Result<LocalCluster, Error> {
        let mut scratch = Scratch {
            databases: Vec::new(),
            dir: std::env::temp_dir().join(format!(
                "obscura-{what}-{}-{:08x}",
                std::process::id(),
                rand_core::RngCore::next_u32(&mut rand_core::OsRng)
            )),
            keep,
        };
        let dir = scratch.dir.join("cluster");
        std::fs::create_dir_all(&scratch.dir)
            .map_err(|e| format!("{}: {e}", scratch.dir.display()))?;
        let k = obscura_cluster::deal::DEFAULT_THRESHOLD;
        let base_port = free_base_port(n as u16 + 3)?;
        let mut opt = obscura_cluster::deal::InitOptions::new(
            n,
            k,
            "127.0.0.1",
            base_port,
            base_port + n as u16,
        );
        opt.tokens = tokens;
        // Measurements run thousands of searches: no budget or rate limit should stop them.
        opt.keeper_budget = u64::MAX / 2;
        opt.capabilities.queries_per_hour = u32::MAX / 2;
        opt.capabilities.fetches_per_hour = u32::MAX / 2;
        obscura_cluster::deal::init(&dir, &opt).map_err(|e| e.to_string())?;
        if let Some(server) = database {
            for (node, config) in local::node_configs(&dir)? {
                let name = format!(
                    "obscura_{}_{}_node{node}",
                    what.replace('-', "_"),
                    std::process::id()
                );
                let url = obscura_store::pg::fresh_database(server, &name)
                    .map_err(|e| format!("node {node}'s database: {e}"))?;
                scratch.databases.push(url.clone());
                let text =
                    std::fs::read(&config).map_err(|e| format!("{}: {e}", config.display()))?;
                let mut c: obscura_cluster::node::NodeConfig = serde_json::from_slice(&text)
                    .map_err(|e| format!("{}: {e}", config.display()))?;
                c.database = Some(url);
                obscura_cluster::files::write_private_atomic(
                    &config,
                    &serde_json::to_vec_pretty(&c).map_err(|e| e.to_string())?,
                )
                .map_err(|e| format!("{}: {e}", config.display()))?;
            }
        }
        let running = local::Running::start(&dir, Some(&scratch.dir))?;
        Ok(LocalCluster {
            n,
            in_database: database.is_some(),
            scratch,
            dir,
            tokens,
            running: Some(running),
            operator: None,
            provisioned: Vec::new(),
        })
    }

    /// "6 nodes (3-of-6), VOPRF tokens from 3 keepers (2-of-3), in DIR", for progress lines.
    pub fn describe(&self) -> String {
        let tokens = match self.tokens {
            TokenKind::Voprf => "VOPRF tokens from 3 keepers (2-of-3)",
            TokenKind::Hmac => "HMAC tokens",
        };
        let (n, k) = (self.nodes(), obscura_cluster::deal::DEFAULT_THRESHOLD);
        let stores = if self.in_database {
            ", stores in PostgreSQL"
        } else {
            ""
        };
        format!(
            "{n} nodes ({k}-of-{n}), {tokens}{stores}, in {}",
            self.dir.display()
        )
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.n
    }

    /// Each running node's and keeper's resident memory in bytes.
    pub fn memory(&self) -> Vec<(local::Member, Option<u64>)> {
        self.running.as_ref().map_or_else(Vec::new, |r| r.memory())
    }

    /// Each running node's resident memory in bytes, and the size of its store file.
    pub fn node_memory(&self) -> Vec<(u8, Option<u64>, u64)> {
        let Some(running) = &self.running else {
            return Vec::new();
        };
        running
            .node_memory()
            .into_iter()
            .map(|(x, rss)| {
                let store = self.dir.join(format!("node{x}")).join("store.redb");
                (x, rss, std::fs::metadata(store).map_or(0, |m| m.len()))
            })
            .collect()
    }

    /// Stop node `x` (SIGTERM, as at the end) while the others go on, to show what the cluster
    /// does with a node down.
    ///
    /// # Errors
    /// The nodes are not running, or node `x` did not stop cleanly.
    pub async fn stop_node(&mut self, x: u8) -> Result<(), Error> {
        let running = self.running.as_mut().ok_or("the nodes are not running")?;
        match running.stop_member(local::Member::Node(x)).await? {
            s if s.success() => Ok(()),
            s => Err(format!("node {x} stopped badly: {s}").into()),
        }
    }

    /// A client of the cluster, once every node answers; `plan` replaces the configured
    /// Stage-1 batch shape.
    pub async fn client(
        &mut self,
        plan: Option<obscura_tokens::BatchPlan>,
    ) -> Result<Arc<Client>, Error> {
        self.client_with(|parts| {
            if let Some(plan) = plan {
                parts.plan = plan;
            }
        })
        .await
    }

    /// A client of the cluster configured as the directory says, then changed by `edit` (for
    /// example to share the images it indexes another way).
    ///
    /// # Errors
    /// As [`client`](Self::client).
    pub async fn client_with(
        &mut self,
        edit: impl FnOnce(&mut obscura_client::ClientParts),
    ) -> Result<Arc<Client>, Error> {
        let mut parts = obscura_client::config::load(&self.dir).map_err(|e| e.to_string())?;
        edit(&mut parts);
        let client = Client::new(parts)?;
        if let Some(running) = &mut self.running {
            running.wait_ready(&client, Duration::from_secs(30)).await?;
        }
        // The keepers take their token-key shares once appraised, before anyone needs tokens.
        for (keeper, outcome) in obscura_client::config::provision_waiting(&self.dir, &client)
            .await
            .map_err(|e| e.to_string())?
        {
            outcome
                .map_err(|e| format!("keeper {keeper} did not take its token-key shares: {e}"))?;
            self.provisioned.push(keeper);
        }
        // Nodes and keepers need a capability and a session: the first client registers the
        // operator (the cluster's first account, its admin with every role), and every client
        // logs in, in memory only.
        let password = match &self.operator {
            Some(p) => p.clone(),
            None => {
                let mut raw = [0u8; 16];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
                let p = Zeroizing::new(obscura_tokens::keyfile::to_hex(&raw).to_string());
                let code =
                    obscura_cluster::deal::read_bootstrap(&self.dir).map_err(|e| e.to_string())?;
                client
                    .register_first(OPERATOR, p.as_bytes(), *code)
                    .await
                    .map_err(Error::from)?;
                self.operator = Some(p.clone());
                p
            }
        };
        client
            .login(OPERATOR, password.as_bytes())
            .await
            .map_err(Error::from)?;
        Ok(Arc::new(client))
    }

    /// Register `user` with `roles` (as the operator, with `operator`, a client logged in as it)
    /// and return a client of the cluster without the data owner's key, logged in as `user`.
    pub async fn user_client(
        &self,
        operator: &Client,
        user: &str,
        roles: u8,
    ) -> Result<Client, Error> {
        let mut raw = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let password = Zeroizing::new(obscura_tokens::keyfile::to_hex(&raw));
        operator
            .register(user, password.as_bytes(), roles)
            .await
            .map_err(Error::from)?;
        let mut parts = obscura_client::config::load(&self.dir).map_err(|e| e.to_string())?;
        parts.owner = None;
        parts.journal = None;
        let client = Client::new(parts)?;
        client
            .login(user, password.as_bytes())
            .await
            .map_err(Error::from)?;
        Ok(client)
    }

    /// Give every node the Stage-1 policy of multi-probe radius `radius` with
    /// `lookups_per_band` tokens a band (the nodes restart to take it).
    pub async fn set_policy(&mut self, radius: u32, lookups_per_band: usize) -> Result<(), Error> {
        self.pause().await?;
        for (_, path) in local::node_configs(&self.dir)? {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut config: obscura_cluster::node::NodeConfig =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            config.policy.probe_radius = radius;
            config.policy.lookups_per_band = lookups_per_band;
            let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
            obscura_cluster::files::write_atomic(&path, &text).map_err(|e| e.to_string())?;
        }
        self.resume()
    }

    /// Stop the nodes (cleanly, as [`stop`](Self::stop)) so their stores can be opened here.
    pub async fn pause(&mut self) -> Result<(), Error> {
        match self.running.take() {
            Some(running) => stopped_cleanly(running.stop().await).map_err(|e| e.join("; ").into()),
            None => Ok(()),
        }
    }

    /// Start the nodes again after [`pause`](Self::pause).
    pub fn resume(&mut self) -> Result<(), Error> {
        if self.running.is_none() {
            self.running = Some(local::Running::start(&self.dir, Some(&self.scratch.dir))?);
        }
        Ok(())
    }

    /// Stop every node; `Ok` when all stopped cleanly, else what went wrong, a line per node.
    pub async fn stop(mut self) -> (Scratch, Result<(), Vec<String>>) {
        let outcome = match self.running.take() {
            Some(running) => stopped_cleanly(running.stop().await),
            None => Ok(()),
        };
        (self.scratch, outcome)
    }
}

fn stopped_cleanly(
    stopped: Vec<(local::Member, Result<std::process::ExitStatus, Error>)>,
) -> Result<(), Vec<String>> {
    let bad: Vec<String> = stopped
        .iter()
        .filter_map(|(member, s)| match s {
            Ok(s) if s.success() => None,
            Ok(s) => Some(format!("{member} stopped badly: {s}")),
            Err(e) => Some(format!("{member}: {e}")),
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}
