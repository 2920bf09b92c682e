//! One task per sink: read each source forward from the sink's cursor, deliver a batch, advance
//! and persist the cursor only once the batch is acknowledged, and on failure retry the same
//! records after a backoff. The producer is never involved: it only writes its log and calls
//! `notify`, so a slow or dead receiver costs it nothing.

use std::{future::Future, sync::atomic::Ordering::Relaxed, sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

use super::{backoff::Backoff, cursor::CursorFile, event::Event, status::Shared};

/// Fallback poll when no `notify` came (a producer that does not call it, a missed wake-up).
const POLL: Duration = Duration::from_millis(250);
/// How long `shutdown` lets a sink deliver what is pending.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A delivery that did not complete; the first `delivered` events of the batch did arrive.
#[derive(Debug)]
pub(crate) struct DeliveryError {
    pub delivered: usize,
    pub message: String,
}

impl DeliveryError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            delivered: 0,
            message: message.into(),
        }
    }
}

/// What a sink does with a batch. Implementations keep their connection between calls and
/// must never put a secret in a `DeliveryError`.
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver(
        &mut self,
        events: &[Event],
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// How a sink paces its deliveries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub batch_max: usize,
    /// Longest one delivery may take before it counts as failed.
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// Sinks without their own retry settings (files, syslog).
pub(crate) const LOCAL_PACE: Pace = Pace {
    batch_max: 256,
    timeout: Duration::from_secs(30),
    retry_initial: Duration::from_millis(250),
    retry_max: Duration::from_secs(10),
};

pub(crate) struct Runner<D> {
    pub shared: Arc<Shared>,
    pub sink: D,
    pub pace: Pace,
    pub cursor_file: CursorFile,
    pub stop: watch::Receiver<bool>,
}

impl<D: Deliver> Runner<D> {
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.pace.retry_initial, self.pace.retry_max);
        // Set once shutdown is asked: from then on, deliver what is pending until this instant.
        let mut deadline: Option<Instant> = None;
        loop {
            self.shared.check_backlog();
            match self.pump(deadline).await {
                Ok(true) => backoff.reset(),
                Ok(false) if deadline.is_some() => break,
                Ok(false) => self.idle(&mut deadline).await,
                Err(message) => {
                    self.shared.record_failure(message);
                    let delay = backoff.next_delay();
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        break;
                    }
                    self.pause(delay, &mut deadline).await;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let backlog: u64 = self.shared.lanes.iter().map(|l| l.backlog()).sum();
        tracing::debug!(sink = %self.shared.id, kind = self.shared.kind, backlog, "export sink stopped");
    }

    /// One batch from each source. Ok(true) when anything was delivered.
    async fn pump(&mut self, deadline: Option<Instant>) -> Result<bool, String> {
        let mut progressed = false;
        let shared = self.shared.clone();
        for lane in &shared.lanes {
            let cursor = lane.cursor.load(Relaxed);
            let records = lane
                .source
                .read_after(cursor, self.pace.batch_max)
                .map_err(|e| format!("reading the {} log: {e}", lane.kind.as_str()))?;
            if records.is_empty() {
                continue;
            }
            let events = Event::batch(lane.kind, records);
            let until = Instant::now() + self.pace.timeout;
            let until = deadline.map_or(until, |d| d.min(until));
            let (delivered, failure) =
                match tokio::time::timeout_at(until, self.sink.deliver(&events)).await {
                    Ok(Ok(())) => (events.len(), None),
                    Ok(Err(e)) => (e.delivered.min(events.len()), Some(e.message)),
                    Err(_) => (0, Some("delivery timed out".to_string())),
                };
            if delivered > 0 {
                lane.cursor.store(events[delivered - 1].seq, Relaxed);
                shared.delivered.fetch_add(delivered as u64, Relaxed);
                self.persist().await?;
                progressed = true;
            }
            if let Some(message) = failure {
                return Err(message);
            }
        }
        Ok(progressed)
    }

    async fn persist(&self) -> Result<(), String> {
        let file = self.cursor_file.clone();
        let cursors = self.shared.cursors();
        tokio::task::spawn_blocking(move || file.store(&cursors))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("saving the cursor: {e}"))
    }

    /// Nothing to send: wait for a new record, the poll tick, or shutdown.
    async fn idle(&mut self, deadline: &mut Option<Instant>) {
        tokio::select! {
            _ = self.shared.notify.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = self.stop.changed() => *deadline = Some(Instant::now() + SHUTDOWN_GRACE),
        }
    }

    /// Back off after a failure, still watching the backlog (the alarm must fire while the
    /// receiver is down) and cutting the wait short on shutdown for one last attempt.
    async fn pause(&mut self, delay: Duration, deadline: &mut Option<Instant>) {
        let end = Instant::now() + delay;
        while Instant::now() < end {
            let tick = tokio::time::sleep_until(end.min(Instant::now() + POLL));
            if deadline.is_some() {
                tick.await;
            } else {
                tokio::select! {
                    _ = tick => {}
                    _ = self.stop.changed() => {
                        *deadline = Some(Instant::now() + SHUTDOWN_GRACE);
                        return;
                    }
                }
            }
            self.shared.check_backlog();
        }
    }
}
