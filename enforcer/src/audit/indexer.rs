//! Keeps the in-memory indexes (`index::Postings`) complete: every receipt appended is
//! indexed by the writer as part of its batch (`insert`), and the receipts already in the log
//! when the store opened are indexed by a background thread, oldest first (`rebuild`).
//!
//! Until the rebuild is done, the receipts it has not reached yet are the range
//! (`rebuilt`, `open_head`]: search and replay read those records directly, so results are
//! complete at every moment, only slower right after a start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{AuditError, Result};
use super::index::{IndexEntry, Postings};
use super::log::ReceiptLog;
use super::receipt::Receipt;

/// Receipts the rebuild indexes per hold of the write lock.
const REBUILD_CHUNK: u64 = 4096;

/// The indexes and how far they reach.
pub struct Indexed {
    pub postings: Postings,
    /// Every seq <= this was indexed by the rebuild.
    pub rebuilt: u64,
    /// The head when the store opened: every seq above it is indexed by its append.
    pub open_head: u64,
}

impl Indexed {
    /// Seqs the indexes do not cover yet: (rebuilt, open_head].
    pub fn unindexed(&self) -> std::ops::RangeInclusive<u64> {
        (self.rebuilt + 1)..=self.open_head
    }
}

pub struct IndexerState {
    indexed: RwLock<Indexed>,
    paused: AtomicBool,
    stop: AtomicBool,
}

impl IndexerState {
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Indexed>> {
        Ok(self.indexed.read()?)
    }

    /// Indexes a written batch (called by the writer, in seq order).
    pub fn insert(&self, first: u64, entries: &[IndexEntry]) {
        let mut w = self.indexed.write().unwrap_or_else(|e| e.into_inner());
        for (i, e) in entries.iter().enumerate() {
            w.postings.insert(first + i as u64, e);
        }
    }

    /// Every seq <= this is findable through the indexes.
    pub fn indexed_upto(&self, head: u64) -> u64 {
        let r = self.indexed.read().unwrap_or_else(|e| e.into_inner());
        if r.rebuilt >= r.open_head {
            head
        } else {
            r.rebuilt
        }
    }
}

pub struct Indexer {
    thread: Option<JoinHandle<()>>,
    pub state: Arc<IndexerState>,
}

impl Indexer {
    /// Starts the rebuild of the receipts already in `log` (paused: tests and benchmarks).
    pub fn start(log: Arc<ReceiptLog<Receipt>>, paused: bool) -> Result<Self> {
        let open_head = log.len();
        let state = Arc::new(IndexerState {
            indexed: RwLock::new(Indexed {
                postings: Postings::default(),
                rebuilt: 0,
                open_head,
            }),
            paused: AtomicBool::new(paused),
            stop: AtomicBool::new(false),
        });
        let thread = if open_head == 0 {
            None
        } else {
            let st = state.clone();
            Some(
                std::thread::Builder::new()
                    .name("audit-indexer".into())
                    .spawn(move || rebuild(&log, &st, open_head))
                    .map_err(|e| AuditError::Flush(format!("cannot start audit indexer: {e}")))?,
            )
        };
        Ok(Indexer { thread, state })
    }

    pub fn set_paused(&self, paused: bool) {
        self.state.paused.store(paused, Ordering::Release);
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rebuild(log: &ReceiptLog<Receipt>, state: &IndexerState, open_head: u64) {
    let started = Instant::now();
    let mut next = 1;
    while next <= open_head {
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        if state.paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let upto = (next + REBUILD_CHUNK - 1).min(open_head);
        let mut entries = Vec::with_capacity((upto - next + 1) as usize);
        for (i, r) in log.records_in(next, upto).enumerate() {
            match r {
                Ok(r) => entries.push((next + i as u64, IndexEntry::of(&r))),
                Err(e) => {
                    // An unreadable record stays out of the index (verify reports it); the
                    // scan below `rebuilt` is then all search has, so the rest still goes in.
                    tracing::warn!(error = %e, "receipts index: a record could not be read");
                }
            }
        }
        let mut w = state.indexed.write().unwrap_or_else(|e| e.into_inner());
        for (seq, e) in &entries {
            w.postings.insert(*seq, e);
        }
        w.rebuilt = upto;
        drop(w);
        next = upto + 1;
    }
    tracing::info!(
        receipts = open_head,
        ms = started.elapsed().as_millis() as u64,
        "receipts index rebuilt from the log"
    );
}
