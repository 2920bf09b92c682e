//! Receipts appended on a proxy thread are written together, once per turn of its event loop.
//!
//! A proxy thread runs a single-threaded runtime: the calls it serves append their receipts
//! one task after another. The first receipt of a turn is written at once (a lone call waits
//! for nothing and costs no extra poll of the event loop); the ones that follow in the same
//! turn are queued, and when the thread has nothing else to run (its runtime is about to
//! park, see [`flush_this_thread`]) everything queued goes to the log in one `write(2)` under
//! the store's write lock and every waiter is answered. Under load that is two writes per
//! turn for any number of receipts, with no hop to the writer thread.
//!
//! Used only on threads that call [`enable_on_this_thread`] and install
//! [`flush_this_thread`] as their runtime's `on_thread_park` hook, in Window mode. Queued
//! receipts do not depend on their caller: a cancelled append is written all the same.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::chain::PreparedRecord;
use super::error::Result;
use super::index::IndexEntry;

/// Where a turn's receipts go: the store, written on the calling thread under its write lock
/// (seqs contiguous in `items` order; returns the first one).
pub(super) trait TurnWriter: Send + Sync {
    fn write_locked(&self, items: &[&PreparedRecord], entries: &[IndexEntry]) -> Result<u64>;
}

/// Receipts after which a turn's queue is written without waiting for the turn's end (bounds
/// the batch and the wait under a run queue that does not drain).
const MAX_TURN_RECORDS: usize = 256;

struct Queued {
    items: Vec<PreparedRecord>,
    entries: Vec<IndexEntry>,
    reply: oneshot::Sender<Result<u64>>,
}

#[derive(Default)]
struct Turn {
    /// The store the queued receipts go to (one per daemon; a different one flushes first).
    core: Option<Arc<dyn TurnWriter>>,
    queued: Vec<Queued>,
    records: usize,
}

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// A receipt was written at once since the runtime last parked.
    static WROTE_THIS_TURN: Cell<bool> = const { Cell::new(false) };
    static TURN: RefCell<Turn> = RefCell::new(Turn::default());
}

/// What became of an append.
pub(super) enum Submitted {
    /// The first of its turn: written already (the first record's seq).
    Written(Result<u64>),
    /// Queued: the receiver gets the first record's seq at the end of the turn.
    Queued(oneshot::Receiver<Result<u64>>),
}

/// This thread's runtime calls [`flush_this_thread`] before it parks: its appends may wait
/// for the turn's end.
pub fn enable_on_this_thread() {
    ENABLED.with(|e| e.set(true));
}

pub(super) fn enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Writes every receipt queued on this thread (the `on_thread_park` hook of proxy threads).
pub fn flush_this_thread() {
    TURN.with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            write(&mut t);
        }
    });
    WROTE_THIS_TURN.with(|w| w.set(false));
}

/// Writes one append's records now if they are the first of this turn, else queues them.
pub(super) fn submit(
    core: &Arc<dyn TurnWriter>,
    items: Vec<PreparedRecord>,
    entries: Vec<IndexEntry>,
) -> Submitted {
    if !WROTE_THIS_TURN.with(|w| w.replace(true)) {
        let all: Vec<&PreparedRecord> = items.iter().collect();
        return Submitted::Written(core.write_locked(&all, &entries));
    }
    let (reply, rx) = oneshot::channel();
    TURN.with(|t| {
        let mut t = t.borrow_mut();
        if t.core
            .as_ref()
            .is_some_and(|c| !std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(core)))
        {
            write(&mut t);
        }
        t.core = Some(core.clone());
        t.records += items.len();
        t.queued.push(Queued {
            items,
            entries,
            reply,
        });
        if t.records >= MAX_TURN_RECORDS {
            write(&mut t);
        }
    });
    Submitted::Queued(rx)
}

/// One write for everything queued, then every waiter answered (seqs are contiguous in queue
/// order). Leaves the turn empty and holding no store.
fn write(t: &mut Turn) {
    let Some(core) = t.core.take() else {
        return;
    };
    let mut queued = std::mem::take(&mut t.queued);
    t.records = 0;
    if queued.is_empty() {
        return;
    }
    let mut entries = Vec::with_capacity(queued.len());
    for q in &mut queued {
        entries.append(&mut q.entries);
    }
    let all: Vec<&PreparedRecord> = queued.iter().flat_map(|q| q.items.iter()).collect();
    let res = core.write_locked(&all, &entries);
    drop(all);
    match res {
        Ok(mut seq) => {
            for q in queued {
                let n = q.items.len() as u64;
                // A waiter that went away (cancelled) does not matter: the receipt is stored.
                let _ = q.reply.send(Ok(seq));
                seq += n;
            }
        }
        Err(e) => {
            for q in queued {
                let _ = q.reply.send(Err(e.duplicate()));
            }
        }
    }
}

impl Drop for Turn {
    /// A thread that ends with receipts queued (its runtime shut down mid-turn) still
    /// writes them.
    fn drop(&mut self) {
        write(self);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::store::tests::{full_receipt, tmp_db, tmp_log};
    use crate::audit::store::AuditStore;
    use crate::audit::Durability;

    /// A fresh store, and a runtime like a proxy thread's (appends batched per turn). The
    /// directories live as long as the last element.
    fn store_and_proxy_like_runtime() -> (
        Arc<AuditStore>,
        tokio::runtime::Runtime,
        (sled::Db, crate::audit::store::tests::TmpDir),
    ) {
        let (db, log) = (tmp_db(), tmp_log());
        let store = Arc::new(AuditStore::open(&db, &log, Durability::default()).unwrap());
        enable_on_this_thread();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(flush_this_thread)
            .build()
            .unwrap();
        (store, rt, (db, log))
    }

    #[test]
    fn a_turns_appends_share_one_write_and_keep_contiguous_seqs() {
        let (store, rt, _dirs) = store_and_proxy_like_runtime();
        let seqs = rt.block_on(async {
            // A lone append is written at once.
            let lone = store.append(full_receipt(0)).await.unwrap();
            assert_eq!(lone.seq, 1);
            let before = store.write_counters().0;
            // 40 tasks ready in the same turn.
            let tasks: Vec<_> = (1..=40)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.append(full_receipt(i)).await.unwrap().seq })
                })
                .collect();
            let mut seqs = Vec::new();
            for t in tasks {
                seqs.push(t.await.unwrap());
            }
            let writes = store.write_counters().0 - before;
            assert!(
                writes <= 2,
                "40 appends of one turn took {writes} writes (want the first at once, the rest together)"
            );
            seqs
        });
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (2..=41).collect::<Vec<u64>>());
        assert_eq!(store.len().unwrap(), 41);
        assert!(store.verify().unwrap().is_ok());
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        assert_eq!(store.replay("es-1").unwrap().len(), 41);
    }

    #[test]
    fn a_cancelled_append_is_written_all_the_same() {
        let (store, rt, _dirs) = store_and_proxy_like_runtime();
        rt.block_on(async {
            store.append(full_receipt(0)).await.unwrap();
            // The second of the turn is queued; its caller gives up before the turn ends.
            let queued = tokio::spawn({
                let store = store.clone();
                async move { store.append(full_receipt(1)).await }
            });
            tokio::task::yield_now().await;
            queued.abort();
            assert!(queued.await.unwrap_err().is_cancelled());
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
        assert_eq!(store.len().unwrap(), 2);
        assert!(store.verify().unwrap().is_ok());
    }

    #[test]
    fn a_failed_write_answers_every_queued_append_with_the_error() {
        let (store, rt, _dirs) = store_and_proxy_like_runtime();
        rt.block_on(async {
            store.append(full_receipt(0)).await.unwrap();
            store.break_writes_for_test();
            let tasks: Vec<_> = (1..=5)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.append(full_receipt(i)).await })
                })
                .collect();
            for t in tasks {
                assert!(t.await.unwrap().is_err(), "no append may succeed");
            }
            assert!(store.check_writable().is_err(), "the store stays failed");
        });
        assert_eq!(store.len().unwrap(), 1);
    }
}
