//! When an append is on disk: group commit for `Strict`, a background flusher for `Window`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::{AuditError, Result};

/// How durable an append is when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed (fsync) before `append` returns; concurrent appends share one flush.
    Strict,
    /// In the page cache when `append` returns; a background flush (fdatasync) runs at most
    /// this long after it. A crash loses at most this window (plus one flush duration).
    Window(Duration),
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Window(Duration::from_millis(200))
    }
}

/// Background flusher: runs `flush` at most `window` after `mark_dirty` (the receipts log's
/// fdatasync and `HEAD` checkpoint, then the sled store). Dropping it flushes once more and
/// joins.
pub struct WindowFlusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dirty: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<String>>>,
    flushes: Arc<AtomicU64>,
}

impl WindowFlusher {
    pub fn start<F>(flush: F, window: Duration) -> Result<Self>
    where
        F: Fn() -> std::result::Result<(), String> + Send + 'static,
    {
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
                    if let Err(e) = flush() {
                        if let Ok(mut slot) = f.lock() {
                            *slot = Some(e);
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

    #[test]
    fn window_flusher_flushes_when_dirty_and_on_drop() {
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        let f = WindowFlusher::start(
            move || {
                r.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            Duration::from_millis(20),
        )
        .unwrap();
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
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }
}
