//! The receipts store: the hash-chained log (`log.rs`) + in-memory indexes (`index.rs`,
//! `indexer.rs`) + durability, shared as `Arc<AuditStore>` by the proxy.
//!
//! The append path writes only the record (one `write(2)` to the log). `append`
//! serializes the receipt to canonical JSON and takes its index entry on the caller's task;
//! then, in Window mode on a proxy thread, hands it to that thread's turn batch (`turn.rs`:
//! the first receipt of an event-loop turn written at once, the rest together when the thread
//! would park); elsewhere either writes it itself (Window mode, no other append in flight,
//! writer idle: no thread hop) or sends it over a bounded tokio mpsc channel to the writer
//! thread (`audit-writer`, a plain `std::thread`, so the store works with or without a tokio
//! runtime), which takes
//! everything queued (up to [`MAX_BATCH`] receipts), chains the hashes in order, writes them in
//! ONE write and, in `Strict` mode, syncs once for the whole batch (group commit)
//! before answering every waiter. The writer indexes each batch as it writes it; after a start
//! the receipts already in the log are indexed in the background (`indexer.rs`), and search
//! and replay read what is not indexed yet.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::chain::{ChainRecord, PreparedRecord, VerifyReport};
use super::durability::{Durability, WindowFlusher};
use super::error::{AuditError, Result};
use super::index::IndexEntry;
use super::indexer::Indexer;
use super::log::ReceiptLog;
use super::receipt::Receipt;
use super::search::{self, Page, Query};
use super::turn::{Submitted, TurnWriter};

/// sled tree where stores from before the receipts log kept the chain (records, head) and
/// its index keys: the chain moves to the log on open and the tree is dropped.
pub const RECEIPTS_TREE: &str = "audit.receipts";
/// The separate index tree of an older layout: dropped by [`AuditStore::open`] (the indexes
/// are rebuilt in memory from the log).
pub const RECEIPTS_INDEX_TREE: &str = "audit.receipts.idx";

/// Most receipts the writer puts in one write (an `append_batch` larger than this is
/// still written whole, alone).
pub const MAX_BATCH: usize = 1024;
/// Append requests that may wait for the writer before `append` itself waits (backpressure).
pub const QUEUE_DEPTH: usize = 4096;

impl ChainRecord for Receipt {
    fn id_for(seq: u64) -> String {
        format!("R{seq:012}")
    }
    fn set_seq_and_id(&mut self, seq: u64, id: String) {
        self.seq = seq;
        self.id = id;
    }
    fn canonical_with_slots(&self) -> Option<Result<(Vec<u8>, (usize, usize), (usize, usize))>> {
        Some(Receipt::canonical_with_slots(self).map_err(Into::into))
    }
}

/// Parses "R000000000042" into 42.
pub fn parse_receipt_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('R')?;
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Counters for benchmarks and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub receipts: u64,
    pub flushes: u64,
}

/// One append (or append_batch) waiting for the writer.
struct Request {
    items: Vec<PreparedRecord>,
    /// What the indexes keep of each item.
    entries: Vec<IndexEntry>,
    /// Seq of the first item.
    reply: oneshot::Sender<Result<u64>>,
}

/// State shared with the writer thread.
#[derive(Default)]
struct Health {
    /// Sticky: once a batch or flush failed, every later append fails (fail closed).
    broken: Mutex<Option<AuditError>>,
    /// Strict-mode flushes done by the writer.
    flushes: AtomicU64,
    /// Batches written on the callers' threads (a lone caller, or a proxy thread's turn)
    /// instead of by the writer thread.
    direct: AtomicU64,
    /// Batches written, and time spent writing them (append_prepared + Strict flush), ns.
    batches: AtomicU64,
    write_ns: AtomicU64,
}

impl Health {
    fn check(&self) -> Result<()> {
        match &*self.broken.lock()? {
            Some(e) => Err(e.duplicate()),
            None => Ok(()),
        }
    }

    fn set(&self, e: &AuditError) {
        let mut slot = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e.duplicate());
        }
    }
}

/// Write-path tuning (benchmarks and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Window mode: a caller that finds the writer idle (nothing queued, write lock free)
    /// writes its own batch under the write lock instead of hopping to the writer thread.
    pub direct: bool,
    /// Start with the background indexer paused (tests).
    pub indexer_paused: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            direct: true,
            indexer_paused: false,
        }
    }
}

/// What the writer thread and direct writers share.
///
/// Fields drop in order: the indexer stops (after its batch in progress) before the Window
/// flusher's final flush.
struct Core {
    indexer: Indexer,
    db: sled::Db,
    log: Arc<ReceiptLog<Receipt>>,
    strict: bool,
    /// Syncs the log and checkpoints its head (both modes; in Window mode it is what makes
    /// appends durable).
    flusher: Option<Arc<WindowFlusher>>,
    health: Arc<Health>,
    /// Held while a batch is written (by the writer thread or a direct writer).
    write_lock: Mutex<()>,
    /// `append_batch` calls in progress (a direct write is only tried when alone).
    in_flight: AtomicUsize,
}

/// A proxy thread's turn batch is written like a direct write: on the caller's thread, under
/// the write lock.
impl TurnWriter for Core {
    fn write_locked(&self, items: &[&PreparedRecord], entries: &[IndexEntry]) -> Result<u64> {
        let _guard = self.write_lock.lock()?;
        self.health.direct.fetch_add(1, Ordering::Relaxed);
        self.write(items, entries)
    }
}

/// Counts an `append_batch` in flight until dropped (also when the future is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Core {
    /// Writes `items` in one batch (and syncs it in Strict mode) and indexes them; returns
    /// the seq of the first receipt. Any error is made sticky. The caller holds `write_lock`
    /// (so batches are indexed in seq order).
    fn write(&self, items: &[&PreparedRecord], entries: &[IndexEntry]) -> Result<u64> {
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| self.write_inner(items)))
            .unwrap_or_else(|_| Err(AuditError::Corrupt("audit writer panicked".into())));
        match res {
            Ok(first) => {
                self.indexer.state.insert(first, entries);
                Ok(first)
            }
            Err(e) => {
                self.health.set(&e);
                Err(e)
            }
        }
    }

    fn write_inner(&self, items: &[&PreparedRecord]) -> Result<u64> {
        let t = std::time::Instant::now();
        let res = self.write_timed(items);
        self.health.batches.fetch_add(1, Ordering::Relaxed);
        self.health
            .write_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        res
    }

    fn write_timed(&self, items: &[&PreparedRecord]) -> Result<u64> {
        self.health.check()?;
        if let Some(f) = &self.flusher {
            f.check()?;
        }
        let first = self.log.append_prepared(items)?;
        if self.strict {
            self.health.flushes.fetch_add(1, Ordering::Relaxed);
            self.log.sync()?;
        }
        if let Some(f) = &self.flusher {
            f.mark_dirty();
        }
        Ok(first)
    }

    fn run(&self, mut rx: mpsc::Receiver<Request>) {
        let mut reqs: Vec<Request> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut n = first.items.len();
            reqs.push(first);
            while n < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.items.len();
                        reqs.push(r);
                    }
                    Err(_) => break,
                }
            }
            let entries: Vec<IndexEntry> = reqs
                .iter_mut()
                .flat_map(|r| std::mem::take(&mut r.entries))
                .collect();
            let all: Vec<&PreparedRecord> = reqs.iter().flat_map(|r| r.items.iter()).collect();
            let res = match self.write_lock.lock() {
                Ok(_guard) => self.write(&all, &entries),
                Err(_) => Err(AuditError::Poisoned),
            };
            drop(all);
            match res {
                Ok(mut seq) => {
                    for r in reqs.drain(..) {
                        let n = r.items.len() as u64;
                        // The caller may have gone away (cancelled): the receipt is stored.
                        let _ = r.reply.send(Ok(seq));
                        seq += n;
                    }
                }
                Err(e) => {
                    self.health.set(&e);
                    for r in reqs.drain(..) {
                        let _ = r.reply.send(Err(e.duplicate()));
                    }
                }
            }
        }
    }
}

pub struct AuditStore {
    core: Arc<Core>,
    tuning: Tuning,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl AuditStore {
    /// Opens (or creates) the receipts log in `log_dir` (moving an older store's chain out of
    /// `db` first), and starts the writer thread, the index rebuild of what the log already
    /// holds and the background flusher. Callable inside or outside a
    /// tokio runtime.
    pub fn open(db: &sled::Db, log_dir: &std::path::Path, durability: Durability) -> Result<Self> {
        Self::open_tuned(db, log_dir, durability, Tuning::default())
    }

    /// [`AuditStore::open`] with explicit write-path tuning.
    pub fn open_tuned(
        db: &sled::Db,
        log_dir: &std::path::Path,
        durability: Durability,
        tuning: Tuning,
    ) -> Result<Self> {
        let log = Arc::new(ReceiptLog::open(log_dir)?);
        migrate_chain_to_log(db, &log)?;
        let window = match durability {
            Durability::Strict => Duration::from_millis(200),
            Durability::Window(w) => w.max(Duration::from_millis(1)),
        };
        let flusher = Some(Arc::new(WindowFlusher::start(
            {
                let (log, db) = (log.clone(), db.clone());
                move || {
                    log.checkpoint().map_err(|e| e.to_string())?;
                    db.flush().map(|_| ()).map_err(|e| e.to_string())
                }
            },
            window,
        )?));
        let indexer = Indexer::start(log.clone(), tuning.indexer_paused)?;
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let core = Arc::new(Core {
            db: db.clone(),
            log,
            strict: durability == Durability::Strict,
            flusher,
            health,
            indexer,
            write_lock: Mutex::new(()),
            in_flight: AtomicUsize::new(0),
        });
        let c = core.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || c.run(rx))
            .map_err(|e| AuditError::Flush(format!("cannot start audit writer: {e}")))?;
        Ok(AuditStore {
            core,
            tuning,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// `Err` when the store is known to be unable to record (a failed batch or flush earlier,
    /// or the writer is gone): the proxy calls this before forwarding a call, and refuses it.
    /// `Ok` is no promise that the next append succeeds.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        self.core.health.check()?;
        if let Some(f) = &self.core.flusher {
            f.check()?;
        }
        match &self.tx {
            Some(tx) if !tx.is_closed() => Ok(()),
            _ => Err(writer_gone()),
        }
    }

    /// Appends one receipt; returns it with `id` and `seq` set. `Err` = not recorded (or, in
    /// Strict mode, not known to be on disk): the caller must refuse the call.
    pub fn append(
        &self,
        receipt: Receipt,
    ) -> impl std::future::Future<Output = Result<Receipt, AuditError>> + '_ {
        let boxed = self.append_boxed(Box::new(receipt));
        async move { boxed.await.map(|r| *r) }
    }

    /// [`append`](Self::append) for a boxed receipt (the proxy's): a receipt is 1.3 KB, and
    /// a box moves through the futures that record it for the price of a pointer.
    ///
    /// Not an `async fn`: the receipt is serialized into its batch item at once, so the
    /// future does not depend on it until it gets its `id` and `seq`.
    pub fn append_boxed(
        &self,
        mut receipt: Box<Receipt>,
    ) -> impl std::future::Future<Output = Result<Box<Receipt>, AuditError>> + '_ {
        let prepared = self.prepare(std::slice::from_ref(&*receipt));
        async move {
            let (items, entries) = prepared?;
            let first = self.write_prepared(items, entries).await?;
            receipt.assign(first);
            Ok(receipt)
        }
    }

    /// Appends receipts in order with contiguous seqs, atomically (one write; one sync in
    /// Strict mode).
    ///
    /// Cancel safety: once the receipts are queued, dropping the future does not withdraw
    /// them; they are recorded (or fail) all the same.
    pub async fn append_batch(&self, mut receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(receipts);
        }
        let (items, entries) = self.prepare(&receipts)?;
        let first = self.write_prepared(items, entries).await?;
        for (i, r) in receipts.iter_mut().enumerate() {
            r.assign(first + i as u64);
        }
        Ok(receipts)
    }

    /// The batch items (canonical JSON) and index entries of `receipts`, once the store is
    /// known to be writable.
    fn prepare(&self, receipts: &[Receipt]) -> Result<(Vec<PreparedRecord>, Vec<IndexEntry>)> {
        self.check_writable()?;
        let items = receipts
            .iter()
            .map(PreparedRecord::new)
            .collect::<Result<Vec<_>>>()?;
        Ok((items, receipts.iter().map(IndexEntry::of).collect()))
    }

    /// Writes prepared items: with the rest of this turn on a proxy thread, else directly or
    /// through the writer thread. Returns the first item's seq.
    async fn write_prepared(
        &self,
        items: Vec<PreparedRecord>,
        entries: Vec<IndexEntry>,
    ) -> Result<u64> {
        self.core.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(&self.core.in_flight);
        if self.tuning.direct && !self.core.strict && super::turn::enabled() {
            // A proxy thread: written with the rest of this turn of its event loop.
            let writer: Arc<dyn TurnWriter> = self.core.clone();
            match super::turn::submit(&writer, items, entries) {
                Submitted::Written(res) => res,
                Submitted::Queued(rx) => rx.await.map_err(|_| writer_gone())?,
            }
        } else {
            self.write_directly_or_queue(items, entries).await
        }
    }

    /// Off proxy threads (and in Strict mode): write on the caller's thread when alone, else
    /// queue for the writer thread. Returns the first record's seq.
    async fn write_directly_or_queue(
        &self,
        items: Vec<PreparedRecord>,
        entries: Vec<IndexEntry>,
    ) -> Result<u64> {
        let tx = self.tx.as_ref().ok_or_else(writer_gone)?;
        // Let concurrent appends of this runtime thread show up before deciding: alone ->
        // write directly; several -> queue for the writer thread, which batches them.
        let alone = self.tuning.direct && !self.core.strict && {
            tokio::task::yield_now().await;
            self.core.in_flight.load(Ordering::Acquire) == 1
        };
        match self.try_direct(alone, &items, entries) {
            Ok(res) => res,
            Err(entries) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Request {
                    items,
                    entries,
                    reply,
                })
                .await
                .map_err(|_| writer_gone())?;
                rx.await.map_err(|_| writer_gone())?
            }
        }
    }

    /// Window mode, no other append in flight and the writer idle (nothing queued, write
    /// lock free): write on the caller's thread, saving two thread hand-offs. Gives the keys
    /// back otherwise (concurrent appends go to the writer thread, which batches them).
    fn try_direct(
        &self,
        alone: bool,
        items: &[PreparedRecord],
        entries: Vec<IndexEntry>,
    ) -> std::result::Result<Result<u64>, Vec<IndexEntry>> {
        let Some(tx) = &self.tx else {
            return Err(entries);
        };
        if !alone || !self.tuning.direct || self.core.strict || tx.capacity() != tx.max_capacity() {
            return Err(entries);
        }
        let Ok(_guard) = self.core.write_lock.try_lock() else {
            return Err(entries);
        };
        self.core.health.direct.fetch_add(1, Ordering::Relaxed);
        let all: Vec<&PreparedRecord> = items.iter().collect();
        Ok(self.core.write(&all, &entries))
    }

    /// Flushes everything appended so far (e.g. at shutdown).
    pub async fn flush(&self) -> Result<()> {
        let log = self.core.log.clone();
        tokio::task::spawn_blocking(move || log.checkpoint())
            .await
            .map_err(|e| AuditError::Flush(e.to_string()))??;
        self.core
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| AuditError::Flush(e.to_string()))
    }

    /// The receipt with this id ("R" + 12 digits).
    pub fn get(&self, id: &str) -> Result<Option<Receipt>> {
        let Some(seq) = parse_receipt_id(id) else {
            return Ok(None);
        };
        Ok(self.core.log.get(seq)?.filter(|r| r.id == id))
    }

    /// Number of receipts appended.
    pub fn len(&self) -> Result<u64> {
        Ok(self.core.log.len())
    }

    /// Up to `max` receipts after sequence number `after`, in order (export followers).
    pub fn records_after(&self, after: u64, max: usize) -> Result<Vec<Receipt>> {
        let to = after.saturating_add(max as u64);
        self.core.log.records_in(after + 1, to).collect()
    }

    /// Walks the log (see `ReceiptLog::verify`). Runs synchronously; from async code use
    /// `spawn_blocking` on large stores.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.core.log.verify()
    }

    /// See `search::search`. Synchronous (reads the log).
    pub fn search(&self, q: &Query) -> Result<Page> {
        search::search(&self.core.log, &self.core.indexer.state, q)
    }

    /// All receipts of an enforcer or protocol session, in chain order.
    pub fn replay(&self, session: &str) -> Result<Vec<Receipt>> {
        search::replay(&self.core.log, &self.core.indexer.state, session)
    }

    pub fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            receipts: self.len()?,
            flushes: self.core.health.flushes.load(Ordering::Relaxed)
                + self.core.flusher.as_ref().map_or(0, |f| f.flushes()),
        })
    }

    /// Every receipt with seq <= this is in the indexes (search and replay scan the records
    /// above it directly).
    pub fn indexed_upto(&self) -> u64 {
        self.core.indexer.state.indexed_upto(self.core.log.len())
    }

    /// Write-path counters: (batches written, of which by the calling task directly, total
    /// time spent writing them). For benchmarks.
    pub fn write_counters(&self) -> (u64, u64, Duration) {
        let h = &self.core.health;
        (
            h.batches.load(Ordering::Relaxed),
            h.direct.load(Ordering::Relaxed),
            Duration::from_nanos(h.write_ns.load(Ordering::Relaxed)),
        )
    }

    /// Makes every later write fail (see `ReceiptLog::break_writes_for_test`).
    #[cfg(test)]
    pub(crate) fn break_writes_for_test(&self) {
        self.core.log.break_writes_for_test();
    }

    /// Pauses or resumes the background indexer (tests, maintenance); search stays complete.
    pub fn set_indexer_paused(&self, paused: bool) {
        self.core.indexer.set_paused(paused);
    }

    /// Blocks until every receipt appended so far is indexed, or `timeout` passes; returns
    /// whether it caught up.
    pub fn wait_indexed(&self, timeout: Duration) -> Result<bool> {
        let t = std::time::Instant::now();
        loop {
            if self.indexed_upto() >= self.len()? {
                return Ok(true);
            }
            if t.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Moves the chain of a store from before the log (records and head in a sled tree) into the
/// log, entry by entry as stored (hashes unchanged), then drops the tree (with its index
/// keys: the indexes now live in memory). A crash midway redoes what is left on the next
/// open.
fn migrate_chain_to_log(db: &sled::Db, log: &ReceiptLog<Receipt>) -> Result<()> {
    let names = db.tree_names();
    let has = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    if has(RECEIPTS_INDEX_TREE) {
        db.drop_tree(RECEIPTS_INDEX_TREE)?;
    }
    if !has(RECEIPTS_TREE) {
        return Ok(());
    }
    let tree = db.open_tree(RECEIPTS_TREE)?;
    let mut moved = 0u64;
    let mut old_head = 0u64;
    for kv in tree.range(..[1u8].as_ref()) {
        let (k, v) = kv?;
        if k.len() != 8 {
            continue;
        }
        let seq = u64::from_be_bytes(k.as_ref().try_into().expect("8 bytes"));
        old_head = old_head.max(seq);
        if seq <= log.len() {
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Link {
            hash: String,
        }
        let link: Link = serde_json::from_slice(&v)?;
        let hash = super::canonical::parse_hash(&link.hash)
            .ok_or_else(|| AuditError::Corrupt(format!("seq {seq}: bad hash while migrating")))?;
        log.append_raw(seq, hash, &v)?;
        moved += 1;
    }
    if old_head > 0 {
        log.checkpoint()?;
    }
    drop(tree);
    db.drop_tree(RECEIPTS_TREE)?;
    db.flush()?;
    tracing::info!(
        receipts = moved,
        log = %log.dir().display(),
        "receipts moved from the sled store to the receipts log"
    );
    Ok(())
}

fn writer_gone() -> AuditError {
    AuditError::Corrupt("audit writer is not running".into())
}

impl Drop for AuditStore {
    /// Closes the queue and waits for the writer to finish what was queued; then the Window
    /// flusher (if any) flushes once more as it is dropped.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::chain::Chain;
    use crate::audit::receipt::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A receipt with every field set.
    pub(crate) fn full_receipt(i: u64) -> Receipt {
        Receipt {
            id: String::new(),
            seq: 0,
            time_ns: 1_700_000_000_000_000_000 + i * 1_000_000,
            time: "2023-11-14T22:13:20Z".into(),
            kind: ReceiptKind::Exchange,
            request: Some(RequestInfo {
                jsonrpc_id: json!(i),
                method: "tools/call".into(),
                target: Some(format!("tool-{}", i % 3).into()),
                arguments_digest: Some("sha256:00ff".into()),
                arguments_redacted: Some(CanonicalJson::from_value(
                    &json!({"path": "/etc/[REDACTED]", "n": 1.5}),
                )),
                era: Some("session".into()),
                protocol_version: Some("2025-06-18".into()),
                http_method: "POST".into(),
            }),
            actor: ActorChain {
                user: "alice".into(),
                uid: 1000,
                agent: format!("agent-{}", i % 2).into(),
                instance: "inst-1".into(),
                instance_id: 4242,
                pid: 77,
                surface: Surface {
                    exe: "/usr/bin/node".into(),
                    client: Some("claude-code 1.0".into()),
                    user_agent: Some("ua/1".into()),
                },
            },
            session: SessionRef {
                enforcer_session: "es-1".into(),
                client_flow: "cf-1".into(),
                backend_flow: Some("bf-1".into()),
                protocol_session_id: Some("ps-1".into()),
                state: "active".into(),
                idle_limit_ms: 60_000,
            },
            policy: Some(PolicyTicket {
                version: "v3".into(),
                version_hash: "sha256:ab".into(),
                environment: "prod".into(),
                decision: "allow".into(),
                rule: Some("r1".into()),
                reason_code: "matched".into(),
                note: Some("n".into()),
                shadow_decision: Some("deny".into()),
            }),
            credential: CredentialRef {
                mode: "inject".into(),
                binding: Some("gh@2".into()),
            },
            connector: ConnectorPath {
                connector: "github".into(),
                route: "r".into(),
                backend: "https://api".into(),
                route_status: RouteStatus {
                    state: "reachable".into(),
                    last_error: Some("e".into()),
                    last_latency_us: Some(12),
                },
            },
            outcome: Outcome {
                status: "ok".into(),
                http_status: Some(200),
                rpc_error_code: Some(-32000),
                error: Some("x".into()),
                latency_us: 1234,
                bytes_in: 10,
                bytes_out: 20,
                masking: BTreeMap::from([("email".to_string(), 2u32)]),
            },
            event: Some(ConnectionEvent {
                event: "tls_failure".into(),
                destination: Some("1.2.3.4:443".into()),
                sni: Some("x.example".into()),
                detail: Some("d".into()),
            }),
            recording: Some(CanonicalJson::from_value(
                &json!({"content": [{"type": "text", "text": "[REDACTED]"}]}),
            )),
        }
    }

    pub(crate) fn tmp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    /// A fresh directory for a receipts log, removed when dropped.
    pub(crate) struct TmpDir(std::path::PathBuf);

    impl std::ops::Deref for TmpDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn tmp_log() -> TmpDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "enforcer-receipts-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TmpDir(dir)
    }

    #[tokio::test]
    async fn append_assigns_ids_in_order_and_round_trips() {
        let db = tmp_db();
        let log = tmp_log();
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        for i in 1..=5u64 {
            let r = store.append(full_receipt(i)).await.unwrap();
            assert_eq!(r.seq, i);
            assert_eq!(r.id, format!("R{i:012}"));
            let mut expect = full_receipt(i);
            expect.seq = i;
            expect.id = r.id.clone();
            assert_eq!(r, expect);
            assert_eq!(store.get(&r.id).unwrap(), Some(expect));
        }
        assert_eq!(store.len().unwrap(), 5);
        assert_eq!(store.get("R000000000006").unwrap(), None);
        assert_eq!(store.get("bogus").unwrap(), None);
        assert!(store.verify().unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_give_a_valid_chain() {
        let db = tmp_db();
        let log = tmp_log();
        let store = Arc::new(AuditStore::open(&db, &log, Durability::Strict).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    seqs.push(s.append(full_receipt(t * 100 + i)).await.unwrap().seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let seqs = t.await.unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-task order");
            all.extend(seqs);
        }
        all.sort();
        assert_eq!(all, (1..=320).collect::<Vec<u64>>());
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, 320);
        let flushes = store.stats().unwrap().flushes;
        assert!((1..=320).contains(&flushes), "flushes {flushes}");
    }

    #[tokio::test]
    async fn strict_appends_survive_reopen_and_chain_continues() {
        let dir = std::env::temp_dir().join(format!("audit-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = tmp_log();
        {
            let db = sled::open(&dir).unwrap();
            let store = AuditStore::open(&db, &log, Durability::Strict).unwrap();
            for i in 0..3 {
                store.append(full_receipt(i)).await.unwrap();
            }
            assert!(store.stats().unwrap().flushes >= 1, "strict append flushed");
        }
        {
            let db = sled::open(&dir).unwrap();
            assert!(db.was_recovered());
            let store = AuditStore::open(&db, &log, Durability::Strict).unwrap();
            assert_eq!(store.len().unwrap(), 3);
            let r = store.append(full_receipt(9)).await.unwrap();
            assert_eq!(r.id, "R000000000004");
            let report = store.verify().unwrap();
            assert!(report.is_ok(), "{report}");
            assert_eq!(report.checked, 4);
            // Indexes survived too.
            assert_eq!(store.replay("es-1").unwrap().len(), 4);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn window_mode_flushes_in_background() {
        let db = tmp_db();
        let log = tmp_log();
        let store =
            AuditStore::open(&db, &log, Durability::Window(Duration::from_millis(10))).unwrap();
        store.append(full_receipt(1)).await.unwrap();
        let t = std::time::Instant::now();
        while store.stats().unwrap().flushes == 0 && t.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(store.stats().unwrap().flushes >= 1);
    }

    #[tokio::test]
    async fn unwritable_store_returns_error() {
        let db = tmp_db();
        let log = tmp_log();
        let store = AuditStore::open(&db, &log, Durability::Strict).unwrap();
        store.append(full_receipt(1)).await.unwrap();
        store.core.log.break_writes_for_test();
        assert!(store.check_writable().is_ok(), "not known broken yet");
        let err = store.append(full_receipt(2)).await;
        assert!(
            err.is_err(),
            "append to a log that cannot be written must fail"
        );
        // The failed append did not advance the chain.
        assert_eq!(store.len().unwrap(), 1);
        // Fail closed: the store stays broken.
        assert!(store.check_writable().is_err());
        assert!(store.append(full_receipt(3)).await.is_err());
        assert!(store.append_batch(vec![full_receipt(4)]).await.is_err());
        assert_eq!(store.len().unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_fails_every_waiter() {
        let db = tmp_db();
        let log = tmp_log();
        let store = Arc::new(AuditStore::open(&db, &log, Durability::default()).unwrap());
        store.append(full_receipt(0)).await.unwrap();
        store.core.log.break_writes_for_test();
        let tasks: Vec<_> = (0..8u64)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.append(full_receipt(i)).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert!(store.check_writable().is_err());
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn usable_without_a_runtime_and_from_several_runtimes() {
        let db = tmp_db();
        let log = tmp_log();
        // Opened, read and dropped outside any runtime (the CLI case).
        let store = AuditStore::open(&db, &log, Durability::Strict).unwrap();
        assert!(store.check_writable().is_ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(store.append(full_receipt(1))).unwrap();
        assert_eq!(r.seq, 1);
        let rt2 = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let out = rt2
            .block_on(store.append_batch(vec![full_receipt(2), full_receipt(3)]))
            .unwrap();
        assert_eq!(out.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(store.get("R000000000003").unwrap(), Some(out[1].clone()));
        assert!(store.verify().unwrap().is_ok());
        drop(store);
        // Reopened: continues the chain.
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        assert_eq!(rt.block_on(store.append(full_receipt(4))).unwrap().seq, 4);
    }

    #[tokio::test]
    async fn migrates_the_old_two_tree_layout() {
        let db = tmp_db();
        let log = tmp_log();
        {
            // Old layout: records + head in RECEIPTS_TREE, index keys (no namespace byte) in
            // RECEIPTS_INDEX_TREE, written in one transaction.
            let old: Chain<Receipt> = Chain::open(
                db.open_tree(RECEIPTS_TREE).unwrap(),
                Some(db.open_tree(RECEIPTS_INDEX_TREE).unwrap()),
            )
            .unwrap();
            old.append_batch(
                (1..=3).map(full_receipt).collect(),
                crate::audit::chain::tests::index_keys,
            )
            .unwrap();
        }
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == RECEIPTS_INDEX_TREE.as_bytes()));
        assert_eq!(store.len().unwrap(), 3);
        assert_eq!(store.replay("es-1").unwrap().len(), 3);
        let page = store
            .search(&Query {
                agent: Some("agent-1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.receipts.len(), 2);
        assert_eq!(store.append(full_receipt(4)).await.unwrap().seq, 4);
        assert_eq!(store.replay("es-1").unwrap().len(), 4);
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report}");
    }

    #[tokio::test]
    async fn migrates_the_sled_chain_into_the_log() {
        use crate::audit::chain::tests::{index_keys, INDEX_NS};
        let db = tmp_db();
        let log = tmp_log();
        let old_head = {
            // The layout before the receipts log: records, head and index keys in one tree.
            let old: Chain<Receipt> =
                Chain::open_shared(db.open_tree(RECEIPTS_TREE).unwrap(), INDEX_NS.to_vec())
                    .unwrap();
            old.append_batch((1..=5).map(full_receipt).collect(), index_keys)
                .unwrap();
            old.head().unwrap()
        };
        {
            let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
            assert!(!db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == RECEIPTS_TREE.as_bytes()));
            assert_eq!(store.len().unwrap(), 5);
            assert_eq!(store.core.log.head().unwrap(), old_head, "hashes unchanged");
            assert_eq!(store.get("R000000000002").unwrap().unwrap().seq, 2);
            assert_eq!(store.append(full_receipt(6)).await.unwrap().seq, 6);
        }
        // Reopened: nothing migrated twice, the chain whole.
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        assert_eq!(store.len().unwrap(), 6);
        assert_eq!(store.replay("es-1").unwrap().len(), 6);
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, 6);
    }

    #[tokio::test]
    async fn lone_window_appends_write_directly() {
        let db = tmp_db();
        let log = tmp_log();
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        for i in 0..3 {
            store.append(full_receipt(i)).await.unwrap();
        }
        assert_eq!(
            store.write_counters().1,
            3,
            "no writer-thread hop when alone"
        );
        let off_log = tmp_log();
        let off = AuditStore::open_tuned(
            &tmp_db(),
            &off_log,
            Durability::default(),
            Tuning {
                direct: false,
                ..Default::default()
            },
        )
        .unwrap();
        off.append(full_receipt(1)).await.unwrap();
        assert_eq!(off.write_counters(), (1, 0, off.write_counters().2));
        let strict_log = tmp_log();
        let strict = AuditStore::open(&tmp_db(), &strict_log, Durability::Strict).unwrap();
        strict.append(full_receipt(1)).await.unwrap();
        assert_eq!(
            strict.write_counters().1,
            0,
            "Strict always uses the writer"
        );
        assert!(store.verify().unwrap().is_ok());
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        assert_eq!(store.replay("es-1").unwrap().len(), 3);
    }

    #[test]
    fn the_direct_canonical_form_equals_the_generic_one() {
        let mut rs = vec![full_receipt(1), Receipt::default()];
        // Free-form JSON whose keys are not in order, nested, in every JSON-valued field.
        let mut odd = full_receipt(2);
        let messy = serde_json::from_str::<serde_json::Value>(
            r#"{"z": 1, "a": {"y": [{"d": 1, "c": "\u00e9\"q"}], "b": null}, "m": 1.5, "id": "x", "seq": 7}"#,
        )
        .unwrap();
        odd.recording = Some(CanonicalJson::from_value(&messy));
        odd.request.as_mut().unwrap().arguments_redacted = Some(CanonicalJson::from_value(&messy));
        odd.request.as_mut().unwrap().jsonrpc_id = json!("r\"1");
        odd.event = None;
        odd.policy = None;
        odd.seq = 99;
        odd.id = "R000000000099".into();
        rs.push(odd);
        // Words that need escapes, in the strings the compact writer copies whole otherwise.
        let mut escaped = full_receipt(4);
        escaped.actor.surface.user_agent = Some("curl/8 \"quoted\"\\ \u{1}\t\u{7f} é".into());
        escaped.actor.user = "line\nbreak".into();
        escaped.outcome.error = Some("HTTP 502: \"bad gateway\"".into());
        escaped.outcome.masking.insert("cust\"om".into(), 3);
        rs.push(escaped);
        // A request with every optional member absent.
        let mut sparse = full_receipt(3);
        sparse.request = Some(RequestInfo::default());
        rs.push(sparse);
        for r in &rs {
            assert_eq!(
                PreparedRecord::new(r).unwrap(),
                PreparedRecord::generic(r).unwrap(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn receipt_ids_parse() {
        assert_eq!(parse_receipt_id("R000000000042"), Some(42));
        assert_eq!(parse_receipt_id("R42"), None);
        assert_eq!(parse_receipt_id("X000000000042"), None);
        assert_eq!(Receipt::id_for(7), "R000000000007");
    }
}
