//! When an append is on disk: group commit for `Strict`, a background flusher for `Window`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(test)]
use tokio::sync::Notify;

use super::error::{AuditError, Result};

/// How durable an append is when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed (fsync) before `append` returns; concurrent appends share one flush.
    Strict,
    /// In sled's page cache when `append` returns; a background flush runs at most this long
    /// after it. A crash loses at most this window (plus one flush duration).
    Window(Duration),
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Window(Duration::from_millis(200))
    }
}

#[cfg(test)]
#[derive(Default)]
struct GroupState {
    /// Every seq <= durable is on disk.
    durable: u64,
    flushing: bool,
}

#[cfg(test)]
/// Group commit: the first waiter that finds no flush running becomes the leader and flushes
/// everything committed so far; the others wait for that flush and are done if it covered them.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<GroupState>,
    done: Notify,
    flushes: AtomicU64,
}

#[cfg(test)]
/// Resets `flushing` if the leader's future is dropped mid-flush.
struct LeaderGuard<'a>(&'a GroupCommit, bool);

#[cfg(test)]
impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.1 {
            if let Ok(mut st) = self.0.state.lock() {
                st.flushing = false;
            }
            self.0.done.notify_waiters();
        }
    }
}

#[cfg(test)]
impl GroupCommit {
    /// Number of flushes done so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Returns once `seq` is on disk. `committed()` is the newest seq applied to sled; it must
    /// be >= `seq` when called.
    pub async fn wait_durable(
        &self,
        db: &sled::Db,
        seq: u64,
        committed: impl Fn() -> Result<u64>,
    ) -> Result<()> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let lead = {
                let mut st = self.state.lock()?;
                if st.durable >= seq {
                    return Ok(());
                }
                !std::mem::replace(&mut st.flushing, true)
            };
            if !lead {
                notified.await;
                continue;
            }
            let mut guard = LeaderGuard(self, true);
            let target = committed()?;
            let res = db.flush_async().await;
            guard.1 = false;
            self.flushes.fetch_add(1, Ordering::Relaxed);
            {
                let mut st = self.state.lock()?;
                st.flushing = false;
                if res.is_ok() {
                    st.durable = st.durable.max(target);
                }
            }
            self.done.notify_waiters();
            res.map_err(|e| AuditError::Flush(e.to_string()))?;
        }
    }
}

/// Background flusher for `Window` durability. Dropping it flushes once more and joins.
pub struct WindowFlusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dirty: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<String>>>,
    flushes: Arc<AtomicU64>,
}

impl WindowFlusher {
    pub fn start(db: sled::Db, window: Duration) -> Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let dirty = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let flushes = Arc::new(AtomicU64::new(0));
        let (d, f, n) = (dirty.clone(), failed.clone(), flushes.clone());
        let thread = std::thread::Builder::new()
            .name("audit-flush".into())
            .spawn(move || loop {
                let last = !matches!(rx.recv_timeout(window), Err(RecvTimeoutError::Timeout));
                if d.swap(false, Ordering::AcqRel) || last {
                    n.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = db.flush() {
                        if let Ok(mut slot) = f.lock() {
                            *slot = Some(e.to_string());
                        }
                    }
                }
                if last {
                    break;
                }
            })
            .map_err(|e| AuditError::Flush(format!("cannot start flusher: {e}")))?;
        Ok(WindowFlusher {
            stop: Some(stop),
            thread: Some(thread),
            dirty,
            failed,
            flushes,
        })
    }

    /// Fails if a background flush has failed: the disk is not taking our writes.
    pub fn check(&self) -> Result<()> {
        match &*self.failed.lock()? {
            Some(e) => Err(AuditError::Flush(format!("background flush failed: {e}"))),
            None => Ok(()),
        }
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl Drop for WindowFlusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_covers_concurrent_waiters() {
        let db = db();
        let gc = Arc::new(GroupCommit::default());
        db.insert("k", "v").unwrap();
        let mut tasks = Vec::new();
        for seq in 1..=16u64 {
            let (gc, db) = (gc.clone(), db.clone());
            tasks.push(tokio::spawn(async move {
                gc.wait_durable(&db, seq, || Ok(16)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(gc.flushes() >= 1);
        assert!(
            gc.flushes() < 16,
            "flushes were not shared: {}",
            gc.flushes()
        );
        // Already durable: no new flush.
        let before = gc.flushes();
        gc.wait_durable(&db, 5, || Ok(16)).await.unwrap();
        assert_eq!(gc.flushes(), before);
    }

    #[test]
    fn window_flusher_flushes_when_dirty_and_on_drop() {
        let db = db();
        let f = WindowFlusher::start(db.clone(), Duration::from_millis(20)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(f.flushes(), 0, "flushed while clean");
        f.mark_dirty();
        let t = Instant::now();
        while f.flushes() == 0 && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(f.flushes(), 1);
        assert!(f.check().is_ok());
        let flushes = f.flushes.clone();
        drop(f);
        assert_eq!(flushes.load(Ordering::Relaxed), 2, "final flush on drop");
    }
}
