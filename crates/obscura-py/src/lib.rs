//! `obscura._obscura`: the client, for Python. The package `obscura` (in `python/`) wraps it
//! in dataclasses; this module is its native half and is not meant to be used alone.
//!
//! Each call is one command line's work on the cluster directory and its session file (a
//! client is loaded for it, so a login by `obscura login` is seen here and the other way
//! round), run on a runtime the `Cluster` owns, with the GIL released while the nodes and
//! keepers answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use obscura_client::{names, pipeline, Client};
use obscura_ledger::entry::Transition;
use obscura_sharing::manifest::ImageId;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(
    _obscura,
    ObscuraError,
    PyException,
    "An operation of the cluster failed (the message says which servers, and why)."
);

fn error(e: impl std::fmt::Display) -> PyErr {
    ObscuraError::new_err(e.to_string())
}

/// A cluster directory (made by `obscura cluster init`, or a user's copy of it).
#[pyclass(module = "obscura._obscura", frozen)]
struct Cluster {
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

/// What `Cluster.index` did: `(indexed, skipped, recovered, ledger_error, warnings)`, with
/// indexed as `(item, id)` and skipped as `(item, why)`.
type IndexReport = (
    Vec<(usize, String)>,
    Vec<(usize, String)>,
    Vec<String>,
    Option<String>,
    Vec<String>,
);

/// `node 2, keeper 1`.
fn parties(culprits: &[obscura_client::Party]) -> String {
    culprits
        .iter()
        .map(|p| match p {
            obscura_client::Party::Node(i) => format!("node {i}"),
            obscura_client::Party::Keeper(j) => format!("keeper {j}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Cluster {
    /// A client with the session as it is now: `OBSCURA_SESSION`, else `DIR/session.json`.
    fn client(&self) -> PyResult<Client> {
        let parts = obscura_client::config::load(&self.dir).map_err(error)?;
        let client = Client::new(parts).map_err(error)?;
        let session = std::env::var_os("OBSCURA_SESSION")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.join("session.json"));
        client.attach_session(&session).map_err(error)?;
        Ok(client)
    }

    fn logged_in(&self) -> PyResult<Client> {
        let client = self.client()?;
        if client.user().is_none() {
            return Err(error("not logged in: call login(user, password) first"));
        }
        Ok(client)
    }
}

#[pymethods]
impl Cluster {
    #[new]
    fn new(dir: PathBuf) -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(error)?;
        let cluster = Cluster { dir, runtime };
        // A wrong directory fails here, not at the first search.
        cluster.client()?;
        Ok(cluster)
    }

    /// The account logged in, if any.
    fn user(&self) -> PyResult<Option<String>> {
        Ok(self.client()?.user())
    }

    /// Log in with every keeper that answers: `(user, keepers, expires_at)`.
    fn login(
        &self,
        py: Python<'_>,
        user: &str,
        password: &str,
    ) -> PyResult<(String, Vec<u8>, u64)> {
        let client = self.client()?;
        let report = py
            .detach(|| {
                self.runtime
                    .block_on(client.login(user, password.as_bytes()))
            })
            .map_err(error)?;
        Ok((report.user, report.keepers, report.expires_at))
    }

    /// End the sessions at the keepers; who was logged in.
    fn logout(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let client = self.client()?;
        let Some(user) = client.user() else {
            return Ok(None);
        };
        py.detach(|| self.runtime.block_on(client.logout()))
            .map_err(error)?;
        Ok(Some(user))
    }

    /// Index `files` (paths), as `obscura index` does.
    fn index(&self, py: Python<'_>, files: Vec<PathBuf>) -> PyResult<IndexReport> {
        let client = self.logged_in()?;
        py.detach(|| self.runtime.block_on(index(&self.dir, client, &files)))
    }

    /// Search with an image file's bytes: `[(id, distance, file)]`, closest first.
    fn search(
        &self,
        py: Python<'_>,
        image: Vec<u8>,
        top: usize,
        max_distance: u32,
    ) -> PyResult<Vec<(String, u32, Option<String>)>> {
        if !(1..=1000).contains(&top) || max_distance > 64 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "top is 1 to 1000 and max_distance 0 to 64",
            ));
        }
        let client = self.logged_in()?;
        let out = py
            .detach(|| {
                self.runtime
                    .block_on(client.search(&image, top, max_distance))
            })
            .map_err(error)?;
        let ids: Vec<ImageId> = out.matches.iter().map(|m| m.id).collect();
        let files = names::of(&self.dir, &ids).unwrap_or_default();
        Ok(out
            .matches
            .iter()
            .map(|m| (m.id.to_string(), m.distance, files.get(&m.id).cloned()))
            .collect())
    }

    /// Rebuild image `id` from any k nodes; its file's bytes.
    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyBytes>> {
        let id = obscura_tokens::keyfile::from_hex(id)
            .map(ImageId)
            .ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "{id:?} is not an image id (32 hex digits)"
                ))
            })?;
        let client = self.logged_in()?;
        let rebuilt = py
            .detach(|| self.runtime.block_on(client.get(id)))
            .map_err(error)?;
        Ok(PyBytes::new(py, &rebuilt.image))
    }
}

/// `obscura index`'s steps: finish an interrupted run, index in batches, record the file
/// names, enter the registrations in the ledger, then count the images as reported. Once the
/// nodes have committed, nothing raises: what did not go through is in the warnings.
async fn index(dir: &Path, mut client: Client, files: &[PathBuf]) -> PyResult<IndexReport> {
    client.acknowledge_reports();
    let finished = client.finish_interrupted().await.map_err(error)?;
    let mut warnings = Vec::new();
    if !finished.removed.is_empty() {
        warnings.push(format!(
            "removed {} image(s) left at some nodes by an interrupted index",
            finished.removed.len()
        ));
    }
    for (id, failures) in &finished.remaining {
        let nodes: Vec<String> = failures.iter().map(|f| f.node.to_string()).collect();
        warnings.push(format!(
            "image {id} of an interrupted index is still at node(s) {}; it is removed when \
             they are back",
            nodes.join(", ")
        ));
    }
    let client = Arc::new(client);
    let (mut indexed, mut skipped, mut named) = (Vec::new(), Vec::new(), Vec::new());
    pipeline::index_all(
        &client,
        files.len(),
        |i| std::fs::read(&files[i]),
        |i, outcome| match outcome {
            pipeline::Outcome::Indexed(id) => {
                named.push((id, names::of_path(&files[i])));
                indexed.push((i, id));
            }
            pipeline::Outcome::Failed(e) if !e.culprits().is_empty() => {
                skipped.push((i, format!("{e} (misbehaved: {})", parties(&e.culprits()))));
            }
            not => skipped.push((i, not.to_string())),
        },
    )
    .await;
    if let Err(e) = names::record(dir, &named) {
        warnings.push(format!("file names not kept: {e}"));
    }
    for f in client.take_keeper_faults() {
        warnings.push(format!("keeper {}: {} (not used)", f.keeper, f.fault));
    }
    let transitions: Vec<Transition> = client
        .take_registered()
        .into_iter()
        .map(|(id, manifest)| Transition::ImageRegistered {
            image: id.0,
            manifest,
        })
        .collect();
    let mut ledger = None;
    if !transitions.is_empty() {
        match obscura_client::ledger::append(dir, &client, transitions).await {
            Ok(a) => warnings.extend(
                a.failures
                    .iter()
                    .map(|(x, why)| format!("ledger: node {x}: {why}")),
            ),
            Err(e) => {
                ledger = Some(format!(
                    "indexed, but the ledger did not take the registrations: {e}"
                ))
            }
        }
    }
    indexed.sort_by_key(|e| e.0);
    skipped.sort_by_key(|e| e.0);
    // Returned to the caller, so reported: an interrupted run need not name them again.
    for (_, id) in &indexed {
        if let Err(e) = client.acknowledge(*id) {
            warnings.push(e.to_string());
        }
    }
    Ok((
        indexed
            .into_iter()
            .map(|(i, id)| (i, id.to_string()))
            .collect(),
        skipped,
        finished.recovered.iter().map(ImageId::to_string).collect(),
        ledger,
        warnings,
    ))
}

#[pymodule]
fn _obscura(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Cluster>()?;
    m.add("ObscuraError", m.py().get_type::<ObscuraError>())?;
    Ok(())
}
