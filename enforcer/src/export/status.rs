//! Per-sink state shared by its runner task (the only writer) and `Exporter::status`, and the
//! backlog alarm. Messages kept here never hold secrets: sinks build them without header values.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    Arc, Mutex,
};

use serde::Serialize;
use tokio::sync::Notify;

use super::{
    cursor::Cursors,
    source::{Kind, Source},
};

/// One sink's progress, as `Exporter::status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub id: String,
    /// "jsonl", "syslog" or "webhook".
    pub kind: &'static str,
    pub sources: Vec<SourceStatus>,
    /// Events acknowledged by the receiver since start.
    pub delivered: u64,
    /// Failed delivery attempts since start.
    pub failures: u64,
    pub last_error: Option<String>,
    /// Backlog above `max_backlog` right now.
    pub alarm: bool,
    pub alarms_raised: u64,
    pub max_backlog: u64,
}

/// Where a sink stands in one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// "receipt" or "admin".
    pub source: &'static str,
    /// Last sequence number delivered.
    pub cursor: u64,
    /// Last sequence number written.
    pub head: u64,
    /// Events waiting (head - cursor).
    pub backlog: u64,
}

/// One source as a sink reads it.
pub(crate) struct Lane {
    pub kind: Kind,
    pub source: Arc<dyn Source>,
    pub cursor: AtomicU64,
}

impl Lane {
    pub fn backlog(&self) -> u64 {
        self.source.head().saturating_sub(self.cursor.load(Relaxed))
    }
}

pub(crate) struct Shared {
    pub id: String,
    pub kind: &'static str,
    pub max_backlog: u64,
    pub lanes: Vec<Lane>,
    /// Wakes the runner when a record is written.
    pub notify: Notify,
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    alarm: AtomicBool,
    alarms_raised: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(
        id: &str,
        kind: &'static str,
        max_backlog: u64,
        lanes: Vec<(Kind, Arc<dyn Source>, u64)>,
    ) -> Self {
        Self {
            id: id.to_string(),
            kind,
            max_backlog,
            lanes: lanes
                .into_iter()
                .map(|(kind, source, cursor)| Lane {
                    kind,
                    source,
                    cursor: AtomicU64::new(cursor),
                })
                .collect(),
            notify: Notify::new(),
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            alarm: AtomicBool::new(false),
            alarms_raised: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn cursors(&self) -> Cursors {
        self.lanes
            .iter()
            .map(|l| (l.kind, l.cursor.load(Relaxed)))
            .collect()
    }

    pub fn record_failure(&self, message: String) {
        self.failures.fetch_add(1, Relaxed);
        tracing::warn!(sink = %self.id, kind = self.kind, error = %message, "export delivery failed; will retry");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// Raise the alarm when the backlog crosses `max_backlog` (logged once per crossing),
    /// clear it when the sink has caught up below it again.
    pub fn check_backlog(&self) {
        let backlog: u64 = self.lanes.iter().map(Lane::backlog).sum();
        if backlog > self.max_backlog {
            if !self.alarm.swap(true, Relaxed) {
                self.alarms_raised.fetch_add(1, Relaxed);
                tracing::error!(
                    sink = %self.id,
                    kind = self.kind,
                    backlog,
                    max_backlog = self.max_backlog,
                    "export backlog alarm: the receiver is not keeping up; nothing is dropped, \
                     events wait in the enforcer's logs"
                );
            }
        } else if self.alarm.swap(false, Relaxed) {
            tracing::info!(sink = %self.id, kind = self.kind, backlog, "export backlog back under its limit");
        }
    }

    pub fn status(&self) -> SinkStatus {
        SinkStatus {
            id: self.id.clone(),
            kind: self.kind,
            sources: self
                .lanes
                .iter()
                .map(|l| {
                    let cursor = l.cursor.load(Relaxed);
                    let head = l.source.head();
                    SourceStatus {
                        source: l.kind.as_str(),
                        cursor,
                        head,
                        backlog: head.saturating_sub(cursor),
                    }
                })
                .collect(),
            delivered: self.delivered.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            alarm: self.alarm.load(Relaxed),
            alarms_raised: self.alarms_raised.load(Relaxed),
            max_backlog: self.max_backlog,
        }
    }
}
