//! A node's store on PostgreSQL: the same records and promises as [`Store`](crate::Store), in
//! tables of one database, so that several processes of one node can serve from it (any of them
//! answers; one that dies loses nothing that was acknowledged) and the database can grow, or be
//! a managed or distributed PostgreSQL-compatible engine.
//!
//! - Every state change and its audit entries are one transaction, committed with
//!   PostgreSQL's synchronous commit: acknowledged means on the database's disk. Refusals and
//!   query records are committed without waiting for the flush, as the redb store defers them.
//! - Writers take one transaction-scoped advisory lock, so the audit chain, the key state and
//!   a rotation's steps see one writer at a time across every process, as redb's one write
//!   transaction does within one.
//! - Each process keeps the committed postings in memory, as the redb store does, and brings
//!   them up to date before every lookup from a log of posting changes that a trigger on the
//!   images table writes in the transactions making them: the log's positions are taken under
//!   the writer lock, so they are in commit order, and a lookup applies what its snapshot shows
//!   past its copy's position before it counts. What one process commits the others serve at
//!   once; a copy the log cannot bring up to date (pruned past it, or a database that went
//!   back) is read again whole.
//! - Statements are prepared once per connection, and the ledger lock is a session lock: a
//!   pooler in front of the database must pool by session, not by transaction.
//! - The replay window is a table: a request id admitted by one process is refused by all.
//!
//! The connection is made without TLS: run the database on the node's host or a private link
//! (the node's own listener keeps its TLS).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use object_store::ObjectStoreExt;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel, NoTls, Row, Statement, Transaction};

use obscura_sharing::manifest::ImageId;
use obscura_tokens::{Token, BANDS, TOKEN_LEN};

use crate::audit::{self, AuditEntry, AuditKind, Head};
use crate::backend::RotationFactor;
use crate::postings::Postings;
use crate::rotation::{moves_cover, tok, KeyState, Record, KEY_VERSION, ROTATION};
use crate::{decode_tokens, encode_tokens, id_of, replay_horizon};
use crate::{
    Error, ImageState, KeyVersions, NewImage, NodeStore, RotationStatus, StoreSize, StoreStats,
    StoredImage, StoredLedger, TokenMove, Usage, HASH_SHARE_LEN,
};

/// The advisory lock every writer holds until its transaction ends ("obsc").
const WRITER: i64 = 0x6f62_7363;

// POSTING_FUNCTION names the writer lock by its number.
const _: () = assert!(WRITER == 1_868_723_043);

/// The advisory lock a ledger request holds from reading the ledger to its last write ("obsl").
const LEDGER: i64 = 0x6f62_736c;

/// How long a ledger request waits for another process's.
const LEDGER_WAIT_S: u32 = 10;

/// Counts every change of the ledger, its entries or its kept heads.
const LEDGER_GENERATION: &str = "ledger_generation";

/// Connections a process opens at most (a node works on 32 requests at once by default, a
/// ledger request holds a second connection for its lock): two processes stay under
/// PostgreSQL's default of 100.
const MAX_CONNECTIONS: usize = 40;

/// Random bytes in each share object's name.
const OBJECT_NONCE: usize = 16;

/// How long a request waits for a connection when all are busy.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The tables, created once under the writer lock.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id bytea PRIMARY KEY,
    state smallint NOT NULL,
    changed_at bigint NOT NULL,
    tokens bytea NOT NULL,
    manifest bytea NOT NULL,
    -- The share, or with share_object its BLAKE3 digest, naming the object that holds it.
    share bytea NOT NULL,
    share_object boolean NOT NULL DEFAULT false,
    hash bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS images_pending ON images (changed_at) WHERE state = 1;
CREATE TABLE IF NOT EXISTS postings (
    token bytea NOT NULL,
    image bytea NOT NULL,
    PRIMARY KEY (token, image)
);
CREATE TABLE IF NOT EXISTS token_elements (token bytea PRIMARY KEY, element bytea NOT NULL);
CREATE TABLE IF NOT EXISTS token_map (old bytea PRIMARY KEY, new bytea NOT NULL);
CREATE TABLE IF NOT EXISTS requests (id bytea PRIMARY KEY, at bigint NOT NULL);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
CREATE TABLE IF NOT EXISTS audit (seq bigint PRIMARY KEY, entry bytea NOT NULL);
CREATE TABLE IF NOT EXISTS room_runs (work bytea PRIMARY KEY, runs bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (seq bigint PRIMARY KEY, entry bytea NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
    name text NOT NULL,
    kind text NOT NULL,
    since bigint NOT NULL,
    used bigint NOT NULL,
    PRIMARY KEY (name, kind)
);
CREATE INDEX IF NOT EXISTS usage_since ON usage (since);
-- Each change of a committed image's postings, in commit order (every writer holds the writer
-- lock from its first statement to its commit, and the sequence caches no values per session):
-- tokens removed, tokens added, each in the images table's encoding; `at` by the database's
-- clock. Written by triggers on `images` (POSTING_TRIGGERS), so no writer can leave it out.
CREATE TABLE IF NOT EXISTS posting_log (
    seq bigserial PRIMARY KEY,
    at bigint NOT NULL,
    image bytea NOT NULL,
    removed bytea,
    added bytea
);
CREATE INDEX IF NOT EXISTS posting_log_at ON posting_log (at);
";

/// The function that logs every change of a committed image's postings, replaced at every
/// open (which locks nothing), so a later release's version reaches an existing database.
///
/// It takes the writer lock first: the node's writers hold it already, and any other writer
/// (an operator's SQL) then waits for the node's and takes its positions in commit order too.
/// An image whose id changes is logged as removed under the old and added under the new.
const POSTING_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION obscura_log_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at bigint := extract(epoch FROM statement_timestamp())::bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1868723043);
    IF TG_OP <> 'INSERT' THEN
        IF OLD.state = 2 AND (TG_OP = 'DELETE' OR NEW.state <> 2 OR NEW.id <> OLD.id) THEN
            INSERT INTO posting_log (at, image, removed) VALUES (at, OLD.id, OLD.tokens);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.state = 2 THEN
            IF TG_OP = 'UPDATE' AND OLD.state = 2 AND OLD.id = NEW.id THEN
                INSERT INTO posting_log (at, image, removed, added)
                VALUES (at, NEW.id, OLD.tokens, NEW.tokens);
            ELSE
                INSERT INTO posting_log (at, image, added) VALUES (at, NEW.id, NEW.tokens);
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END $$;
";

/// The triggers that call [`POSTING_FUNCTION`], made once (making a trigger locks the table
/// against writers), each only for rows whose postings change: a pending image's rows queue
/// nothing.
const POSTING_TRIGGERS: &str = "
CREATE TRIGGER images_postings_insert AFTER INSERT ON images
    FOR EACH ROW WHEN (NEW.state = 2) EXECUTE FUNCTION obscura_log_postings();
CREATE TRIGGER images_postings_update AFTER UPDATE ON images
    FOR EACH ROW WHEN ((OLD.state = 2 OR NEW.state = 2) AND (OLD.state <> NEW.state
        OR OLD.tokens <> NEW.tokens OR OLD.id <> NEW.id))
    EXECUTE FUNCTION obscura_log_postings();
CREATE TRIGGER images_postings_delete AFTER DELETE ON images
    FOR EACH ROW WHEN (OLD.state = 2) EXECUTE FUNCTION obscura_log_postings();
ALTER TABLE images ENABLE ALWAYS TRIGGER images_postings_insert;
ALTER TABLE images ENABLE ALWAYS TRIGGER images_postings_update;
ALTER TABLE images ENABLE ALWAYS TRIGGER images_postings_delete;
";

const PENDING: i16 = 1;
const COMMITTED: i16 = 2;

/// The last position removed from the posting log: a copy older than it is read again whole.
const POSTING_FLOOR: &str = "posting_floor";

/// How long posting changes stay in the log: a process that served no search for longer reads
/// the postings again whole.
const POSTING_LOG_KEPT_S: u64 = 3600;

const LEDGER_COSIGNED: &str = "ledger_cosigned";
const LEDGER_COMMITTED: &str = "ledger_committed";

/// One node's store in a PostgreSQL database.
pub struct PgStore {
    node: u8,
    pool: Pool,
    /// Where image shares are kept when not in the database.
    objects: Option<Objects>,
    /// This process's copy of the committed postings: brought up to date under the write lock,
    /// counted under the read lock. Lock order: this, then a connection.
    mirror: RwLock<Mirror>,
    /// Catch-ups begun (see [`PgStore::current`]).
    tickets: std::sync::atomic::AtomicU64,
}

/// The committed postings as of one position of the posting log, with the key state of the
/// same snapshot.
#[derive(Default)]
struct Mirror {
    /// The last position applied; `None` before the first load, or while (and after a failure
    /// part-way through) applying changes: then nothing may be counted on it.
    seq: Option<i64>,
    /// The log's row at that position, when it has one: should it be gone, or name another
    /// image, the database is not the one the copy followed (restored from a backup, failed
    /// over to a standby that lacks the last commits, made again), and the copy is read whole.
    anchor: Option<(i64, ImageId)>,
    postings: Postings,
    keys: KeyState,
    /// The ticket of the catch-up that brought it here.
    ticket: u64,
}

/// Image shares kept as objects, each named by its image, its BLAKE3 digest and a random
/// nonce: every write is a new object, never changed, and removing the object of a row that is
/// gone can never remove one a later row names (the same share prepared again is another
/// object).
struct Objects {
    store: Box<dyn object_store::ObjectStore>,
    /// Where, for messages.
    place: String,
}

impl Objects {
    /// The object store at `location`: `file:///a/folder` or `/a/folder` (made when missing).
    fn open(location: &str) -> Result<Objects, Error> {
        let folder = location.strip_prefix("file://").unwrap_or(location);
        if !folder.starts_with('/') {
            return Err(Error::Storage(format!(
                "shares: {location:?} is not a local folder (file:///a/folder); only the local \
                 file system is built into this node (an s3:// store needs object_store's aws \
                 feature)"
            )));
        }
        std::fs::create_dir_all(folder)
            .map_err(|e| Error::Storage(format!("shares: cannot make {folder}: {e}")))?;
        // Synced on every write: an acknowledged share is on disk, as the database's rows are.
        let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
            .map_err(|e| Error::Storage(format!("shares: {folder}: {e}")))?
            .with_fsync(true);
        Ok(Objects {
            store: Box::new(store),
            place: folder.to_string(),
        })
    }

    /// The object `name` (digest ‖ nonce, as the row keeps it) of image `id`.
    fn path(id: &ImageId, name: &[u8]) -> object_store::path::Path {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        object_store::path::Path::from(format!("images/{}/{}", hex(&id.0), hex(name)))
    }

    /// Write `share` as a new object of image `id`; its name, for the row.
    fn put(&self, id: &ImageId, share: &[u8]) -> Result<Vec<u8>, Error> {
        let mut name = blake3::hash(share).as_bytes().to_vec();
        let mut nonce = [0u8; OBJECT_NONCE];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        name.extend_from_slice(&nonce);
        let payload = object_store::PutPayload::from(share.to_vec());
        futures_executor::block_on(self.store.put(&Self::path(id, &name), payload))
            .map_err(|e| self.failed("write", e))?;
        Ok(name)
    }

    fn get(&self, id: &ImageId, name: &[u8]) -> Result<Vec<u8>, Error> {
        if name.len() != 32 + OBJECT_NONCE {
            return Err(Error::Corrupt("share object name"));
        }
        let bytes = futures_executor::block_on(async {
            self.store.get(&Self::path(id, name)).await?.bytes().await
        })
        .map_err(|e| self.failed("read", e))?;
        // The object store is outside the database's transactions and checks: what comes back
        // must be what was stored.
        if blake3::hash(&bytes).as_bytes().as_slice() != &name[..32] {
            return Err(Error::Corrupt("an image share object was altered"));
        }
        Ok(bytes.to_vec())
    }

    /// Remove objects no row names any more; one that cannot be removed is left (it holds a
    /// share this node no longer serves).
    fn remove(&self, gone: &[(ImageId, Vec<u8>)]) {
        for (id, digest) in gone {
            let _ = futures_executor::block_on(self.store.delete(&Self::path(id, digest)));
        }
    }

    fn failed(&self, what: &str, e: object_store::Error) -> Error {
        Error::Storage(format!(
            "shares in {}: cannot {what} an object: {e}",
            self.place
        ))
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .field("database", &self.pool.place)
            .field("shares", &self.objects.as_ref().map(|o| &o.place))
            .finish()
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Storage(match e.as_db_error() {
            Some(db) => format!("database: {} (SQLSTATE {})", db.message(), db.code().code()),
            None => format!("database: {e}"),
        })
    }
}

/// A value the database keeps as `bigint`.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` the store wrote from a `u64`.
fn unbig(v: i64, what: &'static str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Corrupt(what))
}

fn state_of(v: i16) -> Result<ImageState, Error> {
    match v {
        PENDING => Ok(ImageState::Pending),
        COMMITTED => Ok(ImageState::Committed),
        _ => Err(Error::Corrupt("image state")),
    }
}

/// Connections to one database, reused.
struct Pool {
    config: postgres::Config,
    /// Where, for messages: hosts, ports and database, never the password.
    place: String,
    state: Mutex<PoolState>,
    /// Signalled when a connection is returned or closed.
    freed: std::sync::Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Session>,
    /// Connections open, idle or in use.
    open: usize,
}

impl Pool {
    /// A connection: an idle one, a new one while fewer than [`MAX_CONNECTIONS`] are open, or
    /// the first one returned within [`WAIT`].
    fn get(&self) -> Result<Conn<'_>, Error> {
        let deadline = std::time::Instant::now() + WAIT;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while let Some(c) = state.idle.pop() {
                if !c.client.is_closed() {
                    return Ok(Conn {
                        pool: self,
                        session: Some(c),
                    });
                }
                state.open -= 1;
                close(vec![c]);
            }
            if state.open < MAX_CONNECTIONS {
                state.open += 1;
                break;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Storage(format!(
                    "all {MAX_CONNECTIONS} connections of this process to the database {} \
                     stayed busy for {} s",
                    self.place,
                    WAIT.as_secs()
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(state);
        match self.config.connect(NoTls) {
            Ok(client) => Ok(Conn {
                pool: self,
                session: Some(Session {
                    client,
                    prepared: HashMap::new(),
                }),
            }),
            Err(e) => {
                self.closed();
                Err(Error::Storage(format!(
                    "cannot reach the database {}: {e}",
                    self.place
                )))
            }
        }
    }

    /// Close every idle connection.
    fn close_idle(&self) {
        let idle = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.open -= state.idle.len();
            std::mem::take(&mut state.idle)
        };
        close(idle);
        self.freed.notify_all();
    }

    /// One connection fewer is open.
    fn closed(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
        self.freed.notify_one();
    }
}

/// A connection with the statements prepared on it, by their text: each is parsed and planned
/// once per connection, and every later use is one round trip instead of two. The texts are
/// this module's, so there are a bounded number of them.
struct Session {
    client: Client,
    prepared: HashMap<String, Statement>,
}

/// A connection, back to the pool when dropped (unless it broke).
struct Conn<'a> {
    pool: &'a Pool,
    session: Option<Session>,
}

impl Conn<'_> {
    fn client(&mut self) -> &mut Client {
        &mut self.session.as_mut().expect("held until dropped").client
    }

    /// A transaction at `level`, writing nothing when `read_only`.
    fn transaction(&mut self, level: IsolationLevel, read_only: bool) -> Result<Txn<'_>, Error> {
        let session = self.session.as_mut().expect("held until dropped");
        let txn = session
            .client
            .build_transaction()
            .isolation_level(level)
            .read_only(read_only)
            .start()?;
        Ok(Txn {
            txn,
            prepared: &mut session.prepared,
        })
    }

    /// Close it instead of returning it: its session holds something the next user must not
    /// inherit (a setting, a lock whose release failed).
    fn discard(&mut self) {
        if let Some(c) = self.session.take() {
            close(vec![c]);
            self.pool.closed();
        }
    }
}

/// A transaction that runs each statement prepared once on its connection.
struct Txn<'a> {
    txn: Transaction<'a>,
    prepared: &'a mut HashMap<String, Statement>,
}

type Params<'p> = [&'p (dyn postgres::types::ToSql + Sync)];

impl Txn<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        // Prepared statements belong to the connection, not the transaction: one made in a
        // transaction that rolls back stays.
        let s = self.txn.prepare(sql)?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.txn.query(&s, params)
    }

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.txn.query_one(&s, params)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.txn.query_opt(&s, params)
    }

    fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.txn.execute(&s, params)
    }

    /// Rows one at a time, for a result too large to hold whole.
    fn query_raw(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<postgres::RowIter<'_>, postgres::Error> {
        let s = self.statement(sql)?;
        self.txn.query_raw(&s, params.iter().copied())
    }

    /// Statements without parameters, in one round trip (not prepared).
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.txn.batch_execute(sql)
    }

    fn commit(self) -> Result<(), postgres::Error> {
        self.txn.commit()
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(c) = self.session.take() else {
            return;
        };
        // Kept open for the next request (at most MAX_CONNECTIONS are open): opening and
        // closing connections under load costs more than keeping them.
        if !c.client.is_closed() {
            self.pool
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .idle
                .push(c);
            self.pool.freed.notify_one();
            return;
        }
        close(vec![c]);
        self.pool.closed();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        close(std::mem::take(&mut state.idle));
    }
}

/// Close `clients` on a thread of their own: closing one blocks on its connection's runtime,
/// which panics where the caller drives an async runtime (a node's store is dropped on one when
/// the node stops).
fn close(clients: Vec<Session>) {
    if clients.is_empty() {
        return;
    }
    let _ = std::thread::spawn(move || drop(clients)).join();
}

/// Where `config` points, without its password.
fn place(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default database)")
    )
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user:password@host:port/database`) as the
    /// store of node `node`, creating its tables in a new database. Several processes may open
    /// the same database as the same node.
    ///
    /// Blocks: call it off the async workers (in `spawn_blocking`), as every method.
    ///
    /// # Errors
    /// [`Error::Storage`] when the URL does not parse or the database cannot be reached,
    /// [`Error::WrongNode`] when the database belongs to another node.
    pub fn open(url: &str, node: u8) -> Result<PgStore, Error> {
        Self::open_with_shares(url, node, None)
    }

    /// [`open`](Self::open), with the image shares kept as objects at `shares`
    /// (`file:///a/folder`) instead of in the database; the rows keep each share's digest.
    /// Every process of the node must name the same place.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`Error::Storage`] for a place that is not a local folder
    /// or cannot be made.
    pub fn open_with_shares(url: &str, node: u8, shares: Option<&str>) -> Result<PgStore, Error> {
        let objects = shares.map(Objects::open).transpose()?;
        let config: postgres::Config = url.parse().map_err(|e| {
            Error::Storage(format!(
                "the database URL does not parse (postgres://user:password@host:port/database): \
                 {e}"
            ))
        })?;
        let store = PgStore {
            node,
            objects,
            mirror: RwLock::default(),
            tickets: std::sync::atomic::AtomicU64::new(0),
            pool: Pool {
                place: place(&config),
                config,
                state: Mutex::default(),
                freed: std::sync::Condvar::new(),
            },
        };
        store.write(true, |txn| {
            // Shares are random: stored out of line, never compressed. Set once, when the table
            // is made, since the change locks the table against every other process.
            let new = txn
                .query_one("SELECT to_regclass('images') IS NULL", &[])?
                .try_get::<_, bool>(0)?;
            txn.batch_execute(SCHEMA)?;
            if new {
                txn.batch_execute("ALTER TABLE images ALTER COLUMN share SET STORAGE EXTERNAL")?;
            }
            txn.batch_execute(POSTING_FUNCTION)?;
            // Made where missing; switched on again (for replication sessions too) where
            // someone switched one off.
            let triggers: Vec<(String, bool)> = txn
                .query(
                    "SELECT tgname::text, tgenabled <> 'A' FROM pg_trigger \
                     WHERE tgrelid = 'images'::regclass AND tgname LIKE 'images_postings_%'",
                    &[],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, Error>>()?;
            if triggers.is_empty() {
                txn.batch_execute(POSTING_TRIGGERS)?;
            }
            for (name, _) in triggers.iter().filter(|(_, off)| *off) {
                txn.batch_execute(&format!("ALTER TABLE images ENABLE ALWAYS TRIGGER {name}"))?;
            }
            let found = meta(txn, "node")?;
            match found.as_deref() {
                None => {
                    set_meta(txn, "node", &[node])?;
                    Ok(())
                }
                Some([n]) if *n == node => Ok(()),
                Some([n]) => Err(Error::WrongNode {
                    expected: node,
                    found: *n,
                }),
                Some(_) => Err(Error::Corrupt("node id")),
            }
        })?;
        Ok(store)
    }

    /// Run `f` in a transaction holding the writer lock; committed with a flush to disk when
    /// `durable`, else without waiting for it.
    fn write<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.pool.get()?;
        let out = conn
            // Read committed whatever the server's default: each statement then sees what the
            // writer before this one committed, once the lock is granted.
            .transaction(IsolationLevel::ReadCommitted, false)
            .and_then(|mut txn| {
                txn.batch_execute(&format!(
                    "SET LOCAL synchronous_commit TO {}; SELECT pg_advisory_xact_lock({WRITER})",
                    if durable { "ON" } else { "OFF" }
                ))?;
                let out = f(&mut txn)?;
                txn.commit()?;
                Ok(out)
            });
        if out.is_err() && conn.client().is_closed() {
            // Not run again (it may have committed), but the idle connections are likely
            // closed too (the server restarted, or failed over): the next request opens anew.
            drop(conn);
            self.pool.close_idle();
        }
        out
    }

    /// Run `f` on one consistent snapshot, writing nothing.
    ///
    /// A read whose connection the server closed (it restarted, or failed over) runs once more
    /// on a new one, the idle ones closed first: they are likely closed too, and a read has
    /// nothing to undo.
    fn read<T>(&self, mut f: impl FnMut(&mut Txn<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let mut again = true;
        loop {
            let mut conn = self.pool.get()?;
            let out = conn
                .transaction(IsolationLevel::RepeatableRead, true)
                .and_then(|mut txn| {
                    let out = f(&mut txn)?;
                    txn.commit()?;
                    Ok(out)
                });
            match out {
                Err(_) if again && conn.client().is_closed() => {
                    drop(conn);
                    self.pool.close_idle();
                    again = false;
                }
                out => return out,
            }
        }
    }

    /// Read the committed postings into this process's memory now rather than at the first
    /// lookup (as a redb store does at open): a node does it as it starts.
    ///
    /// # Errors
    /// [`Error::Storage`] when the database cannot be read.
    pub fn warm(&self) -> Result<(), Error> {
        self.current().map(drop)
    }

    /// Remove posting changes logged more than `kept_s` seconds ago (by the database's clock):
    /// a process whose copy is older reads the postings again whole. [`NodeStore::purge_pending`]
    /// does it with an hour.
    ///
    /// # Errors
    /// [`Error::Storage`] when the database refuses.
    pub fn prune_posting_log(&self, kept_s: u64) -> Result<(), Error> {
        self.write(true, |txn| prune_posting_log(txn, kept_s))
    }

    /// This process's postings, brought up to a snapshot taken after the call began, with that
    /// snapshot's key state (another lookup may have brought them further meanwhile: never
    /// back).
    ///
    /// Lookups arriving together share one catch-up: each takes a ticket before its snapshot,
    /// and a lookup that arrived before a ticket was taken uses that catch-up's copy once it is
    /// done, since its snapshot began after the lookup arrived.
    fn current(&self) -> Result<RwLockReadGuard<'_, Mirror>, Error> {
        let arrived = self.tickets.load(std::sync::atomic::Ordering::SeqCst);
        loop {
            {
                let mirror = self.mirror.read().unwrap_or_else(|e| e.into_inner());
                if mirror.seq.is_some() && mirror.ticket > arrived {
                    return Ok(mirror);
                }
            }
            self.catch_up(arrived)?;
        }
    }

    /// Apply the log's changes past the copy's position, in one snapshot with the key state;
    /// or, where the copy is older than what the log keeps, there is none yet, or the database
    /// went back (see [`Mirror::anchor`]), read every committed image's postings.
    fn catch_up(&self, arrived: u64) -> Result<(), Error> {
        let mut mirror = self.mirror.write().unwrap_or_else(|e| {
            // A panic part-way through applying changes left `seq` at `None`.
            self.mirror.clear_poison();
            e.into_inner()
        });
        // Another lookup's catch-up, begun after this one arrived, is done.
        if mirror.seq.is_some() && mirror.ticket > arrived {
            return Ok(());
        }
        let ticket = self
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.read(|txn| {
            let keys = keys(txn)?;
            let row = txn.query_one(
                "SELECT (SELECT value FROM meta WHERE name = $1), \
                     (SELECT last_value FROM posting_log_seq_seq)",
                &[&POSTING_FLOOR],
            )?;
            let floor = floor_of(row.try_get(0)?)?;
            let issued: i64 = row.try_get(1)?;
            let followed = match (mirror.seq, mirror.anchor) {
                // Not older than what the log keeps, nor than the positions it has issued.
                (Some(seq), anchor) if seq >= floor && seq <= issued => {
                    let from = match anchor {
                        Some((at, _)) if at > floor => at,
                        _ => seq + 1,
                    };
                    self.follow(txn, &mut mirror, from)?
                }
                _ => false,
            };
            if !followed {
                reload(txn, &mut mirror, floor)?;
            }
            // Only with the postings of the same snapshot in.
            mirror.keys = keys;
            mirror.ticket = ticket;
            Ok(())
        })
    }

    /// Apply the log from position `from` on (the anchor's, when it is checked), streamed;
    /// `false`, with nothing applied, when the anchor is not there.
    fn follow(&self, txn: &mut Txn<'_>, mirror: &mut Mirror, from: i64) -> Result<bool, Error> {
        let mut rows = txn.query_raw(
            "SELECT seq, image, removed, added FROM posting_log WHERE seq >= $1 ORDER BY seq",
            &[&from],
        )?;
        let mut checked = mirror.anchor.is_none_or(|(at, _)| at != from);
        let position = mirror.seq;
        while let Some(r) = rows.next()? {
            let (seq, id): (i64, ImageId) = (r.try_get(0)?, id_of(r.try_get(1)?)?);
            if !checked {
                if mirror.anchor != Some((seq, id)) {
                    return Ok(false);
                }
                checked = true;
                continue;
            }
            let tokens = |i| {
                r.try_get::<_, Option<&[u8]>>(i)?
                    .map(decode_tokens)
                    .transpose()
            };
            let (removed, added) = (tokens(2)?, tokens(3)?);
            // Unusable until every change is in: a failure from here on leaves `None`, and the
            // next lookup reads the postings whole.
            mirror.seq = None;
            mirror.postings.change(
                id,
                removed.as_ref().map(|t| t.as_slice()),
                added.as_ref().map(|t| t.as_slice()),
            );
            mirror.anchor = Some((seq, id));
        }
        if !checked {
            return Ok(false);
        }
        mirror.seq = match mirror.anchor {
            Some((at, _)) if Some(at) > position => Some(at),
            _ => position,
        };
        Ok(true)
    }

    fn admit(
        &self,
        request_id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
        durable: bool,
        audited: bool,
    ) -> Result<(), Error> {
        if at.abs_diff(now) > window {
            if audited {
                self.record_refusal(request_id, b"stale", now)?;
            }
            return Err(Error::Stale { at, now, window });
        }
        // Forget ids whose time is outside any future window, in the same statement.
        let horizon = big(replay_horizon(now, window));
        let mut conn = self.pool.get()?;
        let mut txn = conn.transaction(IsolationLevel::ReadCommitted, false)?;
        txn.batch_execute(if durable {
            "SET LOCAL synchronous_commit TO ON"
        } else {
            "SET LOCAL synchronous_commit TO OFF"
        })?;
        let fresh = txn.execute(
            "WITH gone AS (DELETE FROM requests WHERE at < $3) \
             INSERT INTO requests (id, at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&request_id.as_slice(), &big(at), &horizon],
        )? == 1;
        txn.commit()?;
        drop(conn);
        if !fresh {
            if audited {
                self.record_refusal(request_id, b"replay", now)?;
            }
            return Err(Error::Replay);
        }
        Ok(())
    }

    /// Keep a ledger head under `name`, durably, as a change of the ledger.
    fn remove_objects(&self, gone: &[(ImageId, Vec<u8>)]) {
        if let Some(o) = &self.objects {
            o.remove(gone);
        }
    }

    fn set_ledger_head(&self, name: &str, value: &[u8]) -> Result<(), Error> {
        self.write(true, |txn| {
            set_meta(txn, name, value)?;
            next_ledger_generation(txn)
        })
    }
}

/// Count one more change of the ledger, inside the transaction that makes it.
fn next_ledger_generation(txn: &mut Txn<'_>) -> Result<(), Error> {
    let now = ledger_generation(txn)?;
    set_meta(txn, LEDGER_GENERATION, &now.wrapping_add(1).to_be_bytes())
}

/// The last position removed from the posting log, 0 when none was.
fn posting_floor(txn: &mut Txn<'_>) -> Result<i64, Error> {
    floor_of(meta(txn, POSTING_FLOOR)?.as_deref())
}

fn floor_of(stored: Option<&[u8]>) -> Result<i64, Error> {
    stored.map_or(Ok(0), |v| {
        v.try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| Error::Corrupt("posting log floor"))
    })
}

/// Read every committed image's postings into `mirror`, streamed, at the log's last position.
fn reload(txn: &mut Txn<'_>, mirror: &mut Mirror, floor: i64) -> Result<(), Error> {
    mirror.seq = None;
    let last = txn
        .query_opt(
            "SELECT seq, image FROM posting_log ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        .map(|r| Ok::<_, Error>((r.try_get::<_, i64>(0)?, id_of(r.try_get(1)?)?)))
        .transpose()?;
    let mut postings = Postings::default();
    let mut rows = txn.query_raw("SELECT id, tokens FROM images WHERE state = 2", &[])?;
    while let Some(r) = rows.next()? {
        let tokens = decode_tokens(r.try_get(1)?)?;
        postings.change(id_of(r.try_get(0)?)?, None, Some(&tokens));
    }
    mirror.postings = postings;
    mirror.anchor = last;
    mirror.seq = Some(last.map_or(floor, |(seq, _)| seq.max(floor)));
    Ok(())
}

/// Remove posting changes logged more than `kept_s` seconds ago, but the newest (a copy's
/// anchor, for telling that the database went back), and raise the floor past them.
fn prune_posting_log(txn: &mut Txn<'_>, kept_s: u64) -> Result<(), Error> {
    let pruned: Option<i64> = txn
        .query_one(
            "WITH gone AS (DELETE FROM posting_log \
                 WHERE at <= extract(epoch FROM statement_timestamp())::bigint - $1 \
                     AND seq < (SELECT max(seq) FROM posting_log) \
                 RETURNING seq) \
             SELECT max(seq) FROM gone",
            &[&big(kept_s)],
        )?
        .try_get(0)?;
    if let Some(pruned) = pruned {
        let floor = posting_floor(txn)?.max(pruned);
        set_meta(txn, POSTING_FLOOR, &floor.to_be_bytes())?;
    }
    Ok(())
}

fn ledger_generation(txn: &mut Txn<'_>) -> Result<u64, Error> {
    meta(txn, LEDGER_GENERATION)?.map_or(Ok(0), |v| {
        v.as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt("ledger generation"))
    })
}

fn meta(txn: &mut Txn<'_>, name: &str) -> Result<Option<Vec<u8>>, Error> {
    let row = txn.query_opt("SELECT value FROM meta WHERE name = $1", &[&name])?;
    row.map(|r| r.try_get(0)).transpose().map_err(Error::from)
}

fn set_meta(txn: &mut Txn<'_>, name: &str, value: &[u8]) -> Result<(), Error> {
    txn.execute(
        "INSERT INTO meta (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&name, &value],
    )?;
    Ok(())
}

/// The key state recorded, with a rotation's token map.
fn keys(txn: &mut Txn<'_>) -> Result<KeyState, Error> {
    // Both values in one round trip: every lookup and every write reads them.
    let (mut version, mut rotation) = (None, None);
    for row in txn.query(
        "SELECT name, value FROM meta WHERE name = $1 OR name = $2",
        &[&KEY_VERSION, &ROTATION],
    )? {
        let value: Vec<u8> = row.try_get(1)?;
        match row.try_get::<_, &str>(0)? {
            KEY_VERSION => version = Some(value),
            _ => rotation = Some(value),
        }
    }
    let current = match version {
        None => 1,
        Some(v) => u32::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("key version"))?,
        ),
    };
    let rotation = match rotation {
        None => None,
        Some(r) => {
            let record = Record::decode(&r)?;
            let mut forward = HashMap::new();
            for row in txn.query("SELECT old, new FROM token_map", &[])? {
                forward.insert(tok(row.try_get(0)?)?, tok(row.try_get(1)?)?);
            }
            Some((record, forward))
        }
    };
    Ok(KeyState::from_parts(current, rotation))
}

fn rotation_record(txn: &mut Txn<'_>) -> Result<Option<Record>, Error> {
    meta(txn, ROTATION)?.map(|r| Record::decode(&r)).transpose()
}

fn audit_head(txn: &mut Txn<'_>) -> Result<Option<Head>, Error> {
    let row = txn.query_opt(
        "SELECT seq, entry FROM audit ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    row.map(|r| audit::head_of(unbig(r.try_get(0)?, "audit seq")?, r.try_get(1)?))
        .transpose()
}

fn insert_audit(txn: &mut Txn<'_>, entries: &[AuditEntry]) -> Result<(), Error> {
    let seqs: Vec<i64> = entries.iter().map(|e| big(e.seq)).collect();
    let bytes: Vec<Vec<u8>> = entries.iter().map(AuditEntry::encode).collect();
    txn.execute(
        "INSERT INTO audit (seq, entry) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
        &[&seqs, &bytes],
    )?;
    Ok(())
}

/// Append one audit entry per item, chained, inside `txn` (which holds the writer lock).
fn append_audit<'d>(
    txn: &mut Txn<'_>,
    now: u64,
    items: impl IntoIterator<Item = (AuditKind, &'d [u8; 16], &'d [u8])>,
) -> Result<(), Error> {
    let mut head = audit_head(txn)?;
    let mut entries = Vec::new();
    for (kind, subject, detail) in items {
        let entry = audit::next_entry(head, now, kind, subject, detail);
        head = Some((entry.seq, entry.hash, kind.tag()));
        entries.push(entry);
    }
    insert_audit(txn, &entries)
}

/// Append the audit entry of a step of a key rotation.
fn key_change(txn: &mut Txn<'_>, now: u64, detail: &str) -> Result<(), Error> {
    append_audit(
        txn,
        now,
        [(AuditKind::KeyChange, &[0; 16], detail.as_bytes())],
    )
}

/// Remove every trace of an image; the digest of its share's object, when it has one, to
/// remove once the transaction committed.
fn remove_image(txn: &mut Txn<'_>, image: &ImageId) -> Result<Option<Vec<u8>>, Error> {
    let id = image.0.as_slice();
    let Some(row) = txn.query_opt(
        "DELETE FROM images WHERE id = $1 RETURNING tokens, share, share_object",
        &[&id],
    )?
    else {
        return Err(Error::UnknownImage(*image));
    };
    let tokens = decode_tokens(row.try_get(0)?)?;
    let list: Vec<&[u8]> = tokens.iter().map(|t| t.0.as_slice()).collect();
    txn.execute(
        "DELETE FROM postings WHERE image = $1 AND token = ANY($2)",
        &[&id, &list],
    )?;
    Ok(if row.try_get::<_, bool>(2)? {
        Some(row.try_get(1)?)
    } else {
        None
    })
}

fn audit_entry(seq: i64, bytes: &[u8]) -> Result<AuditEntry, Error> {
    AuditEntry::decode(unbig(seq, "audit seq")?, bytes).map_err(Error::Corrupt)
}

impl PgStore {
    fn status(&self, txn: &mut Txn<'_>) -> Result<RotationStatus, Error> {
        let versions = keys(txn)?.versions();
        Ok(match rotation_record(txn)? {
            Some(r) => r.status(versions),
            None => RotationStatus::idle(versions),
        })
    }

    fn ledger_write(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        replace: bool,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        self.write(true, |txn| {
            if replace {
                txn.execute("DELETE FROM ledger WHERE seq >= $1", &[&big(from)])?;
            } else {
                let held: i64 = txn
                    .query_one("SELECT count(*) FROM ledger", &[])?
                    .try_get(0)?;
                if unbig(held, "ledger length")? != from {
                    return Err(Error::Invalid("the ledger changed meanwhile"));
                }
            }
            let seqs: Vec<i64> = (0..entries.len()).map(|i| big(from + i as u64)).collect();
            txn.execute(
                "INSERT INTO ledger (seq, entry) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])",
                &[&seqs, &entries],
            )?;
            next_ledger_generation(txn)?;
            append_audit(txn, now, [(AuditKind::Query, request_id, detail)])
        })
    }
}

impl NodeStore for PgStore {
    fn node(&self) -> u8 {
        self.node
    }

    fn prepare_many(&self, images: &[NewImage<'_>], now: u64) -> Result<(), Error> {
        if images
            .iter()
            .any(|img| img.manifest.is_empty() || img.image_share.is_empty())
        {
            return Err(Error::Invalid("empty manifest or image share"));
        }
        let mut gone = Vec::new();
        // Objects this batch wrote: removed again when it does not commit.
        let mut written: Vec<(ImageId, Vec<u8>)> = Vec::new();
        let mut committing = false;
        let done = self.write(true, |txn| {
            let keys = keys(txn)?;
            if let Some(img) = images.iter().find(|i| i.key_version != keys.writing()) {
                return Err(keys.refuse(img.key_version));
            }
            let ids: Vec<&[u8]> = images.iter().map(|i| i.id.0.as_slice()).collect();
            let committed: HashSet<Vec<u8>> = txn
                .query(
                    "SELECT id FROM images WHERE id = ANY($1) AND state = 2",
                    &[&ids],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if let Some(img) = images.iter().find(|i| committed.contains(&i.id.0[..])) {
                return Err(Error::AlreadyExists(img.id));
            }
            // The last of an id sent twice wins, as it does in the redb store.
            let mut rows: HashMap<&[u8], &NewImage<'_>> = HashMap::new();
            let mut elements: HashMap<[u8; TOKEN_LEN], &[u8; 32]> = HashMap::new();
            let mut counterparts: HashMap<[u8; TOKEN_LEN], [u8; TOKEN_LEN]> = HashMap::new();
            for img in images {
                rows.insert(img.id.0.as_slice(), img);
                for (t, e) in img.tokens.iter().zip(img.elements.into_iter().flatten()) {
                    elements.insert(t.0, e);
                }
                if let Some(retired) = img.retired_tokens.filter(|_| keys.rotating()) {
                    for (old, new) in retired.iter().zip(&img.tokens) {
                        if !keys.has_counterpart(&old.0) {
                            counterparts.entry(old.0).or_insert(new.0);
                        }
                    }
                }
            }
            let (ids, imgs): (Vec<&[u8]>, Vec<&NewImage<'_>>) = rows.into_iter().unzip();
            let tokens: Vec<Vec<u8>> = imgs.iter().map(|i| encode_tokens(&i.tokens)).collect();
            let manifests: Vec<&[u8]> = imgs.iter().map(|i| i.manifest).collect();
            let hashes: Vec<&[u8]> = imgs.iter().map(|i| i.hash_share.as_slice()).collect();
            // Pending images prepared again: their old objects go once this commits.
            let replaced = txn
                .query(
                    "SELECT id, share FROM images WHERE id = ANY($1) AND share_object",
                    &[&ids],
                )?
                .iter()
                .map(|r| Ok((id_of(r.try_get(0)?)?, r.try_get::<_, Vec<u8>>(1)?)))
                .collect::<Result<Vec<_>, Error>>()?;
            // With an object store the shares are written (and synced) before the rows that
            // name them; a share whose rows never commit is an object nothing names.
            if let Some(o) = &self.objects {
                for i in &imgs {
                    let name = o.put(&i.id, i.image_share)?;
                    written.push((i.id, name));
                }
            }
            let digests: Vec<Vec<u8>> = written.iter().map(|(_, n)| n.clone()).collect();
            let shares: Vec<&[u8]> = match &self.objects {
                Some(_) => digests.iter().map(Vec::as_slice).collect(),
                None => imgs.iter().map(|i| i.image_share).collect(),
            };
            txn.execute(
                "INSERT INTO images (id, state, changed_at, tokens, manifest, share, \
                     share_object, hash) \
                 SELECT id, 1, $2, t, m, s, $7, h \
                 FROM UNNEST($1::bytea[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[]) \
                     AS u(id, t, m, s, h) \
                 ON CONFLICT (id) DO UPDATE SET state = 1, changed_at = EXCLUDED.changed_at, \
                     tokens = EXCLUDED.tokens, manifest = EXCLUDED.manifest, \
                     share = EXCLUDED.share, share_object = EXCLUDED.share_object, \
                     hash = EXCLUDED.hash",
                &[
                    &ids,
                    &big(now),
                    &tokens,
                    &manifests,
                    &shares,
                    &hashes,
                    &self.objects.is_some(),
                ],
            )?;
            let kept: HashSet<(ImageId, &[u8])> = imgs
                .iter()
                .zip(&shares)
                .map(|(i, s)| (i.id, *s))
                .collect();
            gone.extend(
                replaced
                    .into_iter()
                    .filter(|(id, d)| !kept.contains(&(*id, d.as_slice()))),
            );
            if !elements.is_empty() {
                let (t, e): (Vec<&[u8]>, Vec<&[u8]>) = elements
                    .iter()
                    .map(|(t, e)| (t.as_slice(), e.as_slice()))
                    .unzip();
                txn.execute(
                    "INSERT INTO token_elements (token, element) \
                     SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (token) DO UPDATE SET element = EXCLUDED.element",
                    &[&t, &e],
                )?;
            }
            if !counterparts.is_empty() {
                let (o, n): (Vec<&[u8]>, Vec<&[u8]>) = counterparts
                    .iter()
                    .map(|(o, n)| (o.as_slice(), n.as_slice()))
                    .unzip();
                txn.execute(
                    "INSERT INTO token_map (old, new) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (old) DO NOTHING",
                    &[&o, &n],
                )?;
            }
            append_audit(
                txn,
                now,
                images
                    .iter()
                    .map(|i| (AuditKind::Prepare, &i.id.0, &[][..])),
            )?;
            committing = true;
            Ok(())
        });
        if let Err(e) = done {
            // A commit that failed may still have committed (its answer lost): then the rows
            // name these objects, and they stay.
            if !committing {
                self.remove_objects(&written);
            }
            return Err(e);
        }
        self.remove_objects(&gone);
        Ok(())
    }

    fn commit_many(&self, images: &[ImageId], now: u64) -> Result<(), Error> {
        self.write(true, |txn| {
            let keys = keys(txn)?;
            let ids: Vec<&[u8]> = images.iter().map(|i| i.0.as_slice()).collect();
            let mut found: HashMap<ImageId, (ImageState, [Token; BANDS])> = HashMap::new();
            for row in txn.query(
                "SELECT id, state, tokens FROM images WHERE id = ANY($1)",
                &[&ids],
            )? {
                found.insert(
                    id_of(row.try_get(0)?)?,
                    (state_of(row.try_get(1)?)?, decode_tokens(row.try_get(2)?)?),
                );
            }
            let mut committed: Vec<(ImageId, [Token; BANDS])> = Vec::new();
            for image in images {
                let Some((state, tokens)) = found.get_mut(image) else {
                    return Err(Error::UnknownImage(*image));
                };
                if *state == ImageState::Committed {
                    continue;
                }
                // Prepared before a rotation began, committed during it: post the next
                // version's tokens.
                if let Some(moved) = keys.forward(tokens)? {
                    *tokens = moved;
                }
                *state = ImageState::Committed;
                committed.push((*image, *tokens));
            }
            if committed.is_empty() {
                return Ok(());
            }
            let ids: Vec<&[u8]> = committed.iter().map(|(i, _)| i.0.as_slice()).collect();
            let tokens: Vec<Vec<u8>> = committed.iter().map(|(_, t)| encode_tokens(t)).collect();
            txn.execute(
                "UPDATE images SET state = 2, changed_at = $2, tokens = u.t \
                 FROM UNNEST($1::bytea[], $3::bytea[]) AS u(id, t) WHERE images.id = u.id",
                &[&ids, &big(now), &tokens],
            )?;
            let (posted, by): (Vec<&[u8]>, Vec<&[u8]>) = committed
                .iter()
                .flat_map(|(id, tokens)| tokens.iter().map(move |t| (t.0.as_slice(), &id.0[..])))
                .unzip();
            txn.execute(
                "INSERT INTO postings (token, image) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT DO NOTHING",
                &[&posted, &by],
            )?;
            append_audit(
                txn,
                now,
                committed
                    .iter()
                    .map(|(i, _)| (AuditKind::Commit, &i.0, &[][..])),
            )
        })
    }

    fn delete_if(
        &self,
        image: &ImageId,
        now: u64,
        allow: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let gone = self.write(true, |txn| {
            let row = txn.query_opt(
                "SELECT manifest FROM images WHERE id = $1",
                &[&image.0.as_slice()],
            )?;
            match row {
                Some(r) => allow(r.try_get(0)?)?,
                None => return Err(Error::UnknownImage(*image)),
            }
            let object = remove_image(txn, image)?;
            append_audit(txn, now, [(AuditKind::Delete, &image.0, &[][..])])?;
            Ok(object)
        })?;
        self.remove_objects(&gone.into_iter().map(|d| (*image, d)).collect::<Vec<_>>());
        Ok(())
    }

    fn purge_pending(&self, before: u64, now: u64) -> Result<usize, Error> {
        self.write(true, |txn| {
            let stale: Vec<ImageId> = txn
                .query(
                    "SELECT id FROM images WHERE state = 1 AND changed_at < $1 ORDER BY id",
                    &[&big(before)],
                )?
                .iter()
                .map(|r| id_of(r.try_get(0)?))
                .collect::<Result<_, _>>()?;
            // Posting changes every live process has applied by now (one that has not reads
            // the postings whole).
            prune_posting_log(txn, POSTING_LOG_KEPT_S)?;
            let mut gone = Vec::new();
            for id in &stale {
                if let Some(digest) = remove_image(txn, id)? {
                    gone.push((*id, digest));
                }
            }
            if !stale.is_empty() {
                append_audit(
                    txn,
                    now,
                    stale.iter().map(|i| (AuditKind::Purge, &i.0, &[][..])),
                )?;
            }
            Ok((stale.len(), gone))
        })
        .map(|(purged, gone)| {
            self.remove_objects(&gone);
            purged
        })
    }

    fn lookup_at_least(
        &self,
        key_version: u32,
        tokens: &[Token],
        min_tokens: usize,
    ) -> Result<(Vec<ImageId>, usize), Error> {
        let mirror = self.current()?;
        // Refuses a version not served.
        mirror.keys.counterparts(key_version)?;
        Ok(mirror.postings.count(&mirror.keys, tokens, min_tokens))
    }

    fn hash_shares(&self, ids: &[ImageId]) -> Result<Vec<Option<[u8; HASH_SHARE_LEN]>>, Error> {
        self.read(|txn| {
            let list: Vec<&[u8]> = ids.iter().map(|i| i.0.as_slice()).collect();
            let mut found: HashMap<ImageId, [u8; HASH_SHARE_LEN]> = HashMap::new();
            for row in txn.query(
                "SELECT id, hash FROM images WHERE id = ANY($1) AND state = 2",
                &[&list],
            )? {
                let hash: &[u8] = row.try_get(1)?;
                found.insert(
                    id_of(row.try_get(0)?)?,
                    hash.try_into()
                        .map_err(|_| Error::Corrupt("hash share length"))?,
                );
            }
            Ok(ids.iter().map(|id| found.get(id).copied()).collect())
        })
    }

    fn committed_ids(&self, max: u64) -> Result<Option<Vec<ImageId>>, Error> {
        Ok(self.current()?.postings.committed(max))
    }

    fn image(&self, image: &ImageId) -> Result<Option<StoredImage>, Error> {
        self.read(|txn| {
            let row = txn.query_opt(
                "SELECT manifest, share, share_object FROM images WHERE id = $1 AND state = 2",
                &[&image.0.as_slice()],
            )?;
            row.map(|r| {
                let share: Vec<u8> = r.try_get(1)?;
                let image_share = match (r.try_get::<_, bool>(2)?, &self.objects) {
                    (false, _) => share,
                    (true, Some(o)) => o.get(image, &share)?,
                    (true, None) => {
                        return Err(Error::Storage(
                            "this image's share is kept in an object store, and this node's \
                             configuration names none (\"shares\")"
                                .into(),
                        ))
                    }
                };
                Ok(StoredImage {
                    manifest: r.try_get(0)?,
                    image_share,
                })
            })
            .transpose()
        })
    }

    fn state(&self, image: &ImageId) -> Result<Option<ImageState>, Error> {
        self.read(|txn| {
            let row = txn.query_opt(
                "SELECT state FROM images WHERE id = $1",
                &[&image.0.as_slice()],
            )?;
            row.map(|r| state_of(r.try_get(0)?)).transpose()
        })
    }

    fn admit_request(&self, id: &[u8; 16], at: u64, now: u64, window: u64) -> Result<(), Error> {
        self.admit(id, at, now, window, true, true)
    }

    fn admit_request_deferred(
        &self,
        id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        self.admit(id, at, now, window, false, true)
    }

    fn admit_request_unaudited(
        &self,
        id: &[u8; 16],
        at: u64,
        now: u64,
        window: u64,
    ) -> Result<(), Error> {
        self.admit(id, at, now, window, false, false)
    }

    fn record_query(&self, request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error> {
        self.write(false, |txn| {
            append_audit(txn, now, [(AuditKind::Query, request_id, detail)])
        })
    }

    fn record_refusal(&self, request_id: &[u8; 16], detail: &[u8], now: u64) -> Result<(), Error> {
        self.write(false, |txn| {
            append_audit(txn, now, [(AuditKind::Refused, request_id, detail)])
        })
    }

    fn count_room_run(
        &self,
        work: &[u8; 32],
        max: u32,
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<Option<u32>, Error> {
        self.write(true, |txn| {
            let row = txn.query_opt(
                "SELECT runs FROM room_runs WHERE work = $1",
                &[&work.as_slice()],
            )?;
            let done = row
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .unwrap_or(0);
            if done >= i64::from(max) {
                return Ok(None);
            }
            txn.execute(
                "INSERT INTO room_runs (work, runs) VALUES ($1, $2) \
                 ON CONFLICT (work) DO UPDATE SET runs = EXCLUDED.runs",
                &[&work.as_slice(), &(done + 1)],
            )?;
            append_audit(txn, now, [(AuditKind::Query, request_id, detail)])?;
            Ok(Some(u32::try_from(done + 1).unwrap_or(u32::MAX)))
        })
    }

    fn room_runs(&self, work: &[u8; 32]) -> Result<u32, Error> {
        self.read(|txn| {
            let row = txn.query_opt(
                "SELECT runs FROM room_runs WHERE work = $1",
                &[&work.as_slice()],
            )?;
            let n = row
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .unwrap_or(0);
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    fn audit_checkpoint(&self, key: &ed25519_dalek::SigningKey, now: u64) -> Result<u64, Error> {
        self.write(true, |txn| {
            match audit::next_checkpoint(audit_head(txn)?, key, now) {
                Err(seq) => Ok(seq),
                Ok(entry) => {
                    insert_audit(txn, std::slice::from_ref(&entry))?;
                    Ok(entry.seq)
                }
            }
        })
    }

    fn audit_entries(&self) -> Result<Vec<AuditEntry>, Error> {
        self.read(|txn| {
            txn.query("SELECT seq, entry FROM audit ORDER BY seq", &[])?
                .iter()
                .map(|r| audit_entry(r.try_get(0)?, r.try_get(1)?))
                .collect()
        })
    }

    fn audit_page(&self, from: u64, max: u32) -> Result<(Vec<AuditEntry>, u64), Error> {
        self.read(|txn| {
            // Numbers run from 0 without a gap: the last one gives the length, from the index.
            let total: i64 = txn
                .query_one("SELECT coalesce(max(seq) + 1, 0) FROM audit", &[])?
                .try_get(0)?;
            let entries = txn
                .query(
                    "SELECT seq, entry FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
                    &[&big(from), &i64::from(max)],
                )?
                .iter()
                .map(|r| audit_entry(r.try_get(0)?, r.try_get(1)?))
                .collect::<Result<_, _>>()?;
            Ok((entries, unbig(total, "count")?))
        })
    }

    fn token_elements(&self) -> Result<Vec<(Token, [u8; 32])>, Error> {
        self.read(|txn| {
            txn.query("SELECT token, element FROM token_elements", &[])?
                .iter()
                .map(|r| {
                    let element: &[u8] = r.try_get(1)?;
                    Ok((
                        Token(tok(r.try_get(0)?)?),
                        element.try_into().map_err(|_| Error::Corrupt("element"))?,
                    ))
                })
                .collect()
        })
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        self.read(|txn| {
            let row = txn.query_one(
                "SELECT count(*) FILTER (WHERE state = 2), count(*) FILTER (WHERE state = 1), \
                     (SELECT coalesce(max(seq) + 1, 0) FROM audit) FROM images",
                &[],
            )?;
            Ok(StoreStats {
                committed: unbig(row.try_get(0)?, "count")?,
                pending: unbig(row.try_get(1)?, "count")?,
                audit_entries: unbig(row.try_get(2)?, "count")?,
            })
        })
    }

    fn tells_free_room(&self) -> bool {
        false
    }

    fn size(&self) -> Result<StoreSize, Error> {
        self.read(|txn| {
            let row = txn.query_one("SELECT pg_database_size(current_database())", &[])?;
            Ok(StoreSize {
                bytes: unbig(row.try_get(0)?, "size")?,
                free_bytes: None,
            })
        })
    }

    fn key_versions(&self) -> Result<KeyVersions, Error> {
        self.read(|txn| Ok(keys(txn)?.versions()))
    }

    fn rotation_factor(&self) -> Result<Option<RotationFactor>, Error> {
        self.read(|txn| Ok(keys(txn)?.factor()))
    }

    fn key_state(&self) -> Result<(KeyVersions, Option<RotationFactor>), Error> {
        self.read(|txn| {
            let keys = keys(txn)?;
            Ok((keys.versions(), keys.factor()))
        })
    }

    fn begin_rotation(
        &self,
        from: u32,
        to: u32,
        factor: &[u8; 32],
        moves: &[TokenMove],
        now: u64,
    ) -> Result<RotationStatus, Error> {
        self.write(true, |txn| {
            let keys = keys(txn)?;
            if keys.check_begin(from, to, factor)? {
                return self.status(txn);
            }
            let forward: HashMap<[u8; TOKEN_LEN], [u8; TOKEN_LEN]> =
                moves.iter().map(|m| (m.from.0, m.to.0)).collect();
            let stored = txn.query("SELECT token FROM token_elements", &[])?;
            moves_cover(&forward, stored.iter().map(|r| tok(r.try_get(0)?)))?;
            let (old, new): (Vec<&[u8]>, Vec<&[u8]>) = moves
                .iter()
                .map(|m| (m.from.0.as_slice(), m.to.0.as_slice()))
                .unzip();
            let elements: Vec<&[u8]> = moves.iter().map(|m| m.element.as_slice()).collect();
            txn.execute(
                "INSERT INTO token_elements (token, element) \
                 SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (token) DO UPDATE SET element = EXCLUDED.element",
                &[&new, &elements],
            )?;
            txn.execute(
                "INSERT INTO token_map (old, new) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (old) DO UPDATE SET new = EXCLUDED.new",
                &[&old, &new],
            )?;
            let total: i64 = txn
                .query_one("SELECT count(*) FROM images", &[])?
                .try_get(0)?;
            let total = unbig(total, "count")?;
            let record = Record::begun(to, factor, total);
            set_meta(txn, ROTATION, &record.encode())?;
            let detail = format!(
                "key version {from} -> {to}: begin, {} elements, {total} images",
                moves.len()
            );
            key_change(txn, now, &detail)?;
            self.status(txn)
        })
    }

    fn rotate_step(&self, max_images: usize, now: u64) -> Result<RotationStatus, Error> {
        self.write(true, |txn| {
            let keys = keys(txn)?;
            let Some(mut record) = rotation_record(txn)? else {
                return Err(Error::Invalid("no rotation is under way"));
            };
            if max_images == 0 {
                return self.status(txn);
            }
            let cursor = record.cursor.unwrap_or_default();
            let after = if record.cursor.is_some() { ">" } else { ">=" };
            let batch = txn.query(
                &format!(
                    "SELECT id, state, tokens FROM images WHERE id {after} $1 ORDER BY id LIMIT $2"
                ),
                &[&cursor.as_slice(), &big(max_images as u64)],
            )?;
            let mut scanned = 0usize;
            let (mut ids, mut tokens) = (Vec::new(), Vec::new());
            let (mut old_postings, mut new_postings) = (Vec::new(), Vec::new());
            for row in &batch {
                scanned += 1;
                let id = id_of(row.try_get(0)?)?;
                record.cursor = Some(id.0);
                let state = state_of(row.try_get(1)?)?;
                let current = decode_tokens(row.try_get(2)?)?;
                let Some(next) = keys.forward(&current)? else {
                    // Written under the next version already, and so with its elements; an
                    // image without elements (HMAC tokens) cannot move, and must not be left.
                    let has = txn.query_opt(
                        "SELECT 1 FROM token_elements WHERE token = $1",
                        &[&current[0].0.as_slice()],
                    )?;
                    if has.is_none() {
                        return Err(Error::Invalid(
                            "an image has no stored band elements (HMAC tokens?) and cannot move",
                        ));
                    }
                    continue;
                };
                if state == ImageState::Committed {
                    for (old, new) in current.iter().zip(&next) {
                        old_postings.push((old.0, id.0));
                        new_postings.push((new.0, id.0));
                    }
                    record.postings += BANDS as u64;
                }
                ids.push(id.0);
                tokens.push(encode_tokens(&next));
                record.moved += 1;
            }
            record.done = scanned < max_images;
            let pairs = |v: &[([u8; 16], [u8; 16])]| -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
                v.iter().map(|(t, i)| (t.to_vec(), i.to_vec())).unzip()
            };
            let (t, i) = pairs(&old_postings);
            txn.execute(
                "DELETE FROM postings USING UNNEST($1::bytea[], $2::bytea[]) AS u(t, i) \
                 WHERE postings.token = u.t AND postings.image = u.i",
                &[&t, &i],
            )?;
            let (t, i) = pairs(&new_postings);
            txn.execute(
                "INSERT INTO postings (token, image) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT DO NOTHING",
                &[&t, &i],
            )?;
            let id_list: Vec<&[u8]> = ids.iter().map(|i| i.as_slice()).collect();
            txn.execute(
                "UPDATE images SET tokens = u.t FROM UNNEST($1::bytea[], $2::bytea[]) AS u(id, t) \
                 WHERE images.id = u.id",
                &[&id_list, &tokens],
            )?;
            set_meta(txn, ROTATION, &record.encode())?;
            let detail = format!("key version move: {scanned} images scanned");
            key_change(txn, now, &detail)?;
            self.status(txn)
        })
    }

    fn finish_rotation(&self, to: u32, now: u64) -> Result<RotationStatus, Error> {
        self.write(true, |txn| {
            let keys = keys(txn)?;
            let Some((from, retired)) = keys.check_finish(to)? else {
                return self.status(txn);
            };
            let record =
                rotation_record(txn)?.ok_or(Error::Corrupt("rotation without its record"))?;
            if !record.done {
                return Err(Error::Invalid("images remain to be moved: move them first"));
            }
            let retired: Vec<&[u8]> = retired.iter().map(|t| t.as_slice()).collect();
            if txn
                .query_opt(
                    "SELECT 1 FROM postings WHERE token = ANY($1) LIMIT 1",
                    &[&retired],
                )?
                .is_some()
            {
                return Err(Error::Corrupt("a posting of the old key version remains"));
            }
            txn.execute(
                "DELETE FROM token_elements WHERE token = ANY($1)",
                &[&retired],
            )?;
            txn.execute("DELETE FROM token_map", &[])?;
            txn.execute("DELETE FROM meta WHERE name = $1", &[&ROTATION])?;
            set_meta(txn, KEY_VERSION, &to.to_be_bytes())?;
            let detail = format!("key version {from} -> {to}: finished");
            key_change(txn, now, &detail)?;
            self.status(txn)
        })
    }

    fn rotation_status(&self) -> Result<RotationStatus, Error> {
        self.read(|txn| self.status(txn))
    }

    fn ledger(&self) -> Result<StoredLedger, Error> {
        self.read(|txn| {
            let mut entries = Vec::new();
            for row in txn.query("SELECT seq, entry FROM ledger ORDER BY seq", &[])? {
                if row.try_get::<_, i64>(0)? != entries.len() as i64 {
                    return Err(Error::Corrupt("ledger positions"));
                }
                entries.push(row.try_get(1)?);
            }
            Ok(StoredLedger {
                entries,
                cosigned: meta(txn, LEDGER_COSIGNED)?,
                committed: meta(txn, LEDGER_COMMITTED)?,
                generation: ledger_generation(txn)?,
            })
        })
    }

    fn ledger_page(&self, from: u64, max: u32) -> Result<Vec<Vec<u8>>, Error> {
        self.read(|txn| {
            txn.query(
                "SELECT entry FROM ledger WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&big(from), &i64::from(max)],
            )?
            .iter()
            .map(|r| r.try_get(0).map_err(Error::from))
            .collect()
        })
    }

    fn ledger_append(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        self.ledger_write(from, entries, false, request_id, detail, now)
    }

    fn ledger_replace(
        &self,
        from: u64,
        entries: &[Vec<u8>],
        request_id: &[u8; 16],
        detail: &[u8],
        now: u64,
    ) -> Result<(), Error> {
        self.ledger_write(from, entries, true, request_id, detail, now)
    }

    fn set_ledger_committed(&self, head: &[u8]) -> Result<(), Error> {
        self.set_ledger_head(LEDGER_COMMITTED, head)
    }

    fn set_ledger_cosigned(&self, head: &[u8]) -> Result<(), Error> {
        self.set_ledger_head(LEDGER_COSIGNED, head)
    }

    fn ledger_generation(&self) -> Result<u64, Error> {
        self.read(ledger_generation)
    }

    /// A session lock on a connection of its own, released when the lock is dropped (or, should
    /// the release fail, when the connection closes).
    fn ledger_lock(&self) -> Result<crate::LedgerLock<'_>, Error> {
        struct Held<'a>(Conn<'a>);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                let c = self.0.client();
                if c.execute("SELECT pg_advisory_unlock($1)", &[&LEDGER])
                    .is_err()
                {
                    // Not back to the pool: closing it releases the lock.
                    self.0.discard();
                }
            }
        }
        let mut conn = self.pool.get()?;
        // A holder that hangs makes the others give up after a while, not wait for ever.
        let locked = conn.client().batch_execute(&format!(
            "SET lock_timeout = '{LEDGER_WAIT_S}s'; SELECT pg_advisory_lock({LEDGER}); \
             SET lock_timeout = 0"
        ));
        if let Err(e) = locked {
            // Not back to the pool with the timeout still set.
            conn.discard();
            return Err(Error::Storage(format!(
                "another process of this node held the ledger for over {LEDGER_WAIT_S} s: {}",
                Error::from(e)
            )));
        }
        Ok(crate::LedgerLock::held(Held(conn)))
    }

    /// Counted in the database, so that every process of the node counts against one limit;
    /// committed without waiting for the flush, as a count in memory would be lost in a crash.
    fn charge(
        &self,
        user: &str,
        kind: &'static str,
        n: u32,
        limit: u32,
        window: u64,
        now: u64,
    ) -> Result<Result<(), Usage>, Error> {
        let mut conn = self.pool.get()?;
        let mut txn = conn.transaction(IsolationLevel::ReadCommitted, false)?;
        txn.batch_execute("SET LOCAL synchronous_commit TO OFF")?;
        // Made or locked, and read, in one statement: the row stays locked until the commit,
        // so two processes count one after the other, and none finds it gone meanwhile.
        let row = txn.query_one(
            "INSERT INTO usage (name, kind, since, used) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (name, kind) DO UPDATE SET used = usage.used \
             RETURNING since, used",
            &[&user, &kind, &big(now)],
        )?;
        let mut usage = Usage {
            since: unbig(row.try_get(0)?, "usage")?,
            used: u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or(u32::MAX),
        };
        let charged = usage.charge(n, limit, window, now);
        if charged.is_ok() {
            txn.execute(
                "UPDATE usage SET since = $3, used = $4 WHERE name = $1 AND kind = $2",
                &[&user, &kind, &big(usage.since), &i64::from(usage.used)],
            )?;
        }
        // Rows of windows that ended go, but for rows other requests hold: deleting them
        // before locking this one let two users' requests wait on each other's rows.
        txn.execute(
            "DELETE FROM usage WHERE ctid IN \
             (SELECT ctid FROM usage WHERE since <= $1 FOR UPDATE SKIP LOCKED)",
            &[&big(now.saturating_sub(window))],
        )?;
        txn.commit()?;
        Ok(charged)
    }
}

/// Make an empty database `name` (letters, digits and `_`) on the server that `admin_url`
/// (`postgres://user:password@host:port/database`, a role that may create databases) points
/// to, dropping one of that name first, and return `admin_url` naming it instead. For tests
/// and benchmarks, which each need a database of their own.
///
/// # Errors
/// [`Error::Invalid`] for a name or URL of another shape, [`Error::Storage`] when the server
/// refuses.
pub fn fresh_database(admin_url: &str, name: &str) -> Result<String, Error> {
    let url = renamed(admin_url, name)?;
    // Two statements, each its own transaction; from template0, which no one connects to, so
    // that databases made at once do not wait on each other.
    administer(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )?;
    administer(
        admin_url,
        &format!("CREATE DATABASE {name} TEMPLATE template0"),
    )?;
    Ok(url)
}

/// Drop the database that `url` names (made by [`fresh_database`]), closing every connection
/// to it, through the server's `postgres` database; nothing when there is none.
///
/// # Errors
/// As [`fresh_database`].
pub fn drop_database(url: &str) -> Result<(), Error> {
    let config: postgres::Config = url
        .parse()
        .map_err(|_| Error::Invalid("the database URL does not parse"))?;
    let name = config
        .get_dbname()
        .ok_or(Error::Invalid("the database URL names no database"))?
        .to_string();
    // Checks the name, which the statement names.
    renamed(url, &name)?;
    let admin = renamed(url, "postgres")?;
    administer(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
}

/// `VACUUM (ANALYZE)` every table of the database at `url`: after a bulk load, so that later
/// reads neither set the hint bits of every new row nor run beside autovacuum, and the planner
/// knows the tables' sizes.
///
/// # Errors
/// [`Error::Storage`] when the server refuses.
pub fn vacuum(url: &str) -> Result<(), Error> {
    administer(url, "VACUUM (ANALYZE)")
}

/// `url` naming database `name` instead, once `name` is checked to be letters, digits and `_`.
fn renamed(url: &str, name: &str) -> Result<String, Error> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::Invalid(
            "a database name is 1 to 63 of a-z, 0-9 and _",
        ));
    }
    let authority = url
        .find("://")
        .map(|i| i + 3)
        .ok_or(Error::Invalid("a database URL starts postgres://"))?;
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    Ok(format!("{}/{name}{query}", &url[..path]))
}

/// Run `statement` through a connection of its own to `admin_url`, on a thread of its own so
/// that it may be called from async code (a benchmark's setup): the connection blocks on a
/// runtime of its own.
fn administer(admin_url: &str, statement: &str) -> Result<(), Error> {
    let config: postgres::Config = admin_url
        .parse()
        .map_err(|_| Error::Invalid("the database URL does not parse"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut admin = config.connect(NoTls).map_err(|e| {
                    Error::Storage(format!("cannot reach the database {}: {e}", place(&config)))
                })?;
                admin.batch_execute(statement)?;
                Ok::<_, Error>(())
            })
            .join()
            .map_err(|_| Error::Storage("a database statement panicked".into()))?
    })
}
