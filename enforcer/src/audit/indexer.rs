//! Background indexer: writes the secondary index keys of receipts after they are in the chain,
//! off the append path.
//!
//! The append path writes only the record to the log. After a batch is written, the writer hands the
//! receipts' index keys (already computed on the callers' tasks, seq placeholder at the end) to
//! this thread over a bounded channel (`try_send`: when it is full the keys are dropped and the
//! indexer rebuilds them from the stored records instead). The indexer applies the keys of up
//! to [`INDEX_BATCH`] receipts per `apply_batch`, together with the watermark [`MARK_KEY`]
//! ("indexed up to seq"), so after a crash the mark never claims more than what is stored. On
//! start it continues from the stored mark, reading the records above it from the chain
//! (re-indexing is idempotent: index keys have empty values).
//!
//! `indexed()` is the in-memory mark: every receipt with seq <= it is findable through the
//! indexes. Search and replay use the indexes up to it and scan the records above it directly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sled::Batch;

use super::error::{AuditError, Result};
use super::index::{index_keys, MARK_KEY};
use super::log::ReceiptLog;
use super::receipt::Receipt;

/// Most receipts indexed per `apply_batch` (about 11 keys each). The hot path never waits
/// for sled (receipts go to the log), so batches are sized for the indexer's own efficiency.
pub const INDEX_BATCH: usize = 512;
/// After a batch smaller than [`INDEX_BATCH`], the indexer waits this long for more receipts
/// (fewer, larger batches: about 100 wake-ups a second under load instead of one per append).
pub const GATHER: Duration = Duration::from_millis(10);
/// Receipts whose keys may wait for the indexer (channel + its buffer, ~0.7 KB each) before
/// further keys are dropped (rebuilt from the records instead).
pub const HANDOFF_DEPTH: usize = 50_000;

/// Index keys of consecutive receipts starting at `first` (seq placeholder in the last 8 bytes).
pub struct Handoff {
    pub first: u64,
    pub keys: Vec<Vec<Vec<u8>>>,
}

#[derive(Default)]
pub struct IndexerState {
    indexed: AtomicU64,
    paused: AtomicBool,
    stop: AtomicBool,
    busy: AtomicBool,
    failed: Mutex<Option<String>>,
    batches: AtomicU64,
    /// Receipts handed off and not yet indexed from their keys (channel + buffer).
    queued: AtomicUsize,
    /// When the last append was committed (ns since `epoch`).
    last_write: AtomicU64,
    epoch: Option<Instant>,
}

impl IndexerState {
    pub fn indexed(&self) -> u64 {
        self.indexed.load(Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        self.epoch.map_or(0, |e| e.elapsed().as_nanos() as u64)
    }

    /// Called by the write path after each commit.
    pub fn note_write(&self) {
        self.last_write.store(self.now(), Ordering::Relaxed);
    }
}

pub struct Indexer {
    tx: Option<SyncSender<Handoff>>,
    thread: Option<JoinHandle<()>>,
    pub state: Arc<IndexerState>,
}

/// Stored watermark (0 = nothing indexed).
pub fn read_mark(tree: &sled::Tree) -> Result<u64> {
    match tree.get(MARK_KEY)? {
        Some(v) => {
            let b: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| AuditError::Corrupt("index mark is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(b))
        }
        None => Ok(0),
    }
}

fn with_seq(mut key: Vec<u8>, seq: u64) -> Vec<u8> {
    let n = key.len();
    key[n - 8..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl Indexer {
    /// Starts the indexer thread. `mark` is the stored watermark, clamped to the chain head
    /// (entries above a clamped mark, if any, point to seqs not stored or reused; search
    /// re-checks every record it loads against the query).
    pub fn start(
        log: Arc<ReceiptLog<Receipt>>,
        tree: sled::Tree,
        mark: u64,
        paused: bool,
    ) -> Result<Self> {
        let mark = mark.min(log.len());
        let state = Arc::new(IndexerState {
            epoch: Some(Instant::now()),
            ..Default::default()
        });
        state.indexed.store(mark, Ordering::Release);
        state.paused.store(paused, Ordering::Release);
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || Worker::new(log, tree, st, rx, mark).run())
            .map_err(|e| AuditError::Flush(format!("cannot start audit indexer: {e}")))?;
        Ok(Indexer {
            tx: Some(tx),
            thread: Some(thread),
            state,
        })
    }

    /// Hands over the index keys of a committed batch (never blocks; see module doc).
    pub fn hand_off(&self, h: Handoff) {
        let n = h.keys.len();
        let Some(tx) = &self.tx else { return };
        if self.state.queued.load(Ordering::Relaxed) + n > HANDOFF_DEPTH {
            return;
        }
        self.state.queued.fetch_add(n, Ordering::Relaxed);
        match tx.try_send(h) {
            Ok(()) => {}
            Err(TrySendError::Full(h)) | Err(TrySendError::Disconnected(h)) => {
                self.state.queued.fetch_sub(h.keys.len(), Ordering::Relaxed);
            }
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.state.paused.store(paused, Ordering::Release);
    }
}

impl Drop for Indexer {
    /// Stops after the batch in progress; what is left is re-indexed on the next open.
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    log: Arc<ReceiptLog<Receipt>>,
    tree: sled::Tree,
    state: Arc<IndexerState>,
    rx: Receiver<Handoff>,
    /// Next seq to index.
    next: u64,
    /// Handed-off keys not yet applied: (seq, keys).
    buf: VecDeque<(u64, Vec<Vec<u8>>)>,
    disconnected: bool,
}

impl Worker {
    fn new(
        log: Arc<ReceiptLog<Receipt>>,
        tree: sled::Tree,
        state: Arc<IndexerState>,
        rx: Receiver<Handoff>,
        mark: u64,
    ) -> Self {
        Worker {
            log,
            tree,
            state,
            rx,
            next: mark + 1,
            buf: VecDeque::new(),
            disconnected: false,
        }
    }

    fn push(&mut self, h: Handoff) {
        for (i, keys) in h.keys.into_iter().enumerate() {
            self.buf.push_back((h.first + i as u64, keys));
        }
    }

    fn run(mut self) {
        loop {
            if self.state.stop.load(Ordering::Acquire) {
                return;
            }
            if self.state.paused.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            match self.step() {
                Ok(n) if n == INDEX_BATCH => {}
                Ok(n) if n > 0 => std::thread::sleep(GATHER),
                Ok(_) => {
                    if self.disconnected {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    match self.rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(h) => self.push(h),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => self.disconnected = true,
                    }
                }
                Err(e) => {
                    if let Ok(mut f) = self.state.failed.lock() {
                        *f = Some(e.to_string());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Moves what is queued in the channel into `buf` (up to [`HANDOFF_DEPTH`] receipts
    /// buffered; beyond that the keys are dropped and rebuilt from the records).
    fn drain_channel(&mut self) {
        while self.buf.len() < HANDOFF_DEPTH {
            match self.rx.try_recv() {
                Ok(h) => self.push(h),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    break;
                }
            }
        }
    }

    /// Indexes up to [`INDEX_BATCH`] receipts; returns how many.
    fn step(&mut self) -> Result<usize> {
        if self.buf.len() < INDEX_BATCH {
            self.drain_channel();
        }
        let head = self.log.len();
        let mut batch = Batch::default();
        let start = self.next;
        let mut next = self.next;
        let mut count = 0;
        // Keys of seqs missing from the handoffs (dropped, or from before this start) are
        // rebuilt from the records.
        let log = self.log.clone();
        let from_log =
            |batch: &mut Batch, upto: u64, next: &mut u64, count: &mut usize| -> Result<()> {
                let upto = upto.min(*next + (INDEX_BATCH - *count) as u64 - 1);
                for r in log.records_in(*next, upto) {
                    let r = r?;
                    for k in index_keys(&r) {
                        batch.insert(k, &[][..]);
                    }
                    *count += 1;
                }
                *next = upto + 1;
                Ok(())
            };
        while count < INDEX_BATCH {
            match self.buf.front() {
                Some((seq, _)) if *seq < next => {
                    self.buf.pop_front();
                    self.state.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Some((seq, _)) if *seq > next => {
                    from_log(&mut batch, seq - 1, &mut next, &mut count)?
                }
                Some(_) => {
                    let (seq, keys) = self.buf.pop_front().expect("front");
                    self.state.queued.fetch_sub(1, Ordering::Relaxed);
                    for k in keys {
                        batch.insert(with_seq(k, seq), &[][..]);
                    }
                    next = seq + 1;
                    count += 1;
                }
                None if next <= head => from_log(&mut batch, head, &mut next, &mut count)?,
                None => break,
            }
        }
        if next == start {
            return Ok(0);
        }
        batch.insert(MARK_KEY, &(next - 1).to_be_bytes()[..]);
        self.state.busy.store(true, Ordering::Release);
        let res = self.tree.apply_batch(batch);
        self.state.busy.store(false, Ordering::Release);
        res?;
        self.next = next;
        self.state.indexed.store(next - 1, Ordering::Release);
        self.state.batches.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.state.failed.lock() {
            *f = None;
        }
        Ok(count)
    }
}
