//! Export of audit receipts and admin records to SIEMs as they are written: JSON-lines files,
//! syslog (RFC 5424) and HTTPS webhooks.
//!
//! The enforcer's own logs are the durable queue. Each sink keeps a persisted cursor (the last
//! sequence number it delivered, per source) and reads forward from it, so a sink whose
//! receiver is down falls behind and catches up when it returns; nothing is dropped. When a
//! sink's backlog passes its `max_backlog` it raises an alarm (error log, status flag,
//! counter); the producer is never blocked or slowed. Event format: EXPORT-SCHEMA.md.

mod backoff;
mod config;
mod connector;
mod cursor;
mod error;
mod event;
mod jsonl;
mod runner;
mod source;
mod status;
mod syslog;
mod webhook;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

pub use config::ExportConfig;
pub use error::ExportError;
pub use source::{Kind, Source};
pub use status::SinkStatus;

use config::{Common, StartFrom};
use cursor::CursorFile;
use runner::{Deliver, Pace, Runner, LOCAL_PACE, SHUTDOWN_GRACE};
use status::Shared;

/// The running sinks. Dropping it stops them too (after the same drain as `shutdown`, but
/// without waiting for it).
pub struct Exporter {
    sinks: Vec<Arc<Shared>>,
    /// Taken by `shutdown` (which the daemon calls through the shared handle).
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl Exporter {
    /// Check the configuration, load or create every sink's cursor, and spawn one task per
    /// sink. Must be called inside a tokio runtime.
    pub fn start(
        config: &ExportConfig,
        cursor_dir: &Path,
        sources: Vec<Arc<dyn Source>>,
    ) -> Result<Exporter, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let sources = by_kind(sources)?;
        check_ids(config)?;
        // Build every sink before starting any, so a bad setting leaves nothing half started.
        let jsonl: Vec<_> = config
            .jsonl
            .iter()
            .map(jsonl::Jsonl::new)
            .collect::<Result<_, _>>()?;
        let syslog: Vec<_> = config
            .syslog
            .iter()
            .map(syslog::Syslog::new)
            .collect::<Result<_, _>>()?;
        let webhook: Vec<_> = config
            .webhook
            .iter()
            .map(webhook::Webhook::new)
            .collect::<Result<_, _>>()?;
        let (stop, _) = watch::channel(false);
        let mut started = Starter {
            sources: &sources,
            cursor_dir,
            runtime: &runtime,
            stop: &stop,
            sinks: Vec::new(),
        };
        for (cfg, sink) in config.jsonl.iter().zip(jsonl) {
            started.add(cfg.common(), "jsonl", sink, LOCAL_PACE)?;
        }
        for (cfg, sink) in config.syslog.iter().zip(syslog) {
            started.add(cfg.common(), "syslog", sink, LOCAL_PACE)?;
        }
        for (cfg, sink) in config.webhook.iter().zip(webhook) {
            started.add(cfg.common(), "webhook", sink, webhook::Webhook::pace(cfg))?;
        }
        let (sinks, tasks) = started.sinks.into_iter().unzip();
        Ok(Exporter {
            sinks,
            tasks: std::sync::Mutex::new(tasks),
            stop,
        })
    }

    /// A record was written: wake every sink. Cheap enough for hot paths (an atomic operation
    /// or two per sink, no I/O); a wake-up for a sink that is busy is kept until it waits.
    pub fn notify(&self) {
        for shared in &self.sinks {
            shared.notify.notify_one();
        }
    }

    pub fn status(&self) -> Vec<SinkStatus> {
        self.sinks.iter().map(|s| s.status()).collect()
    }

    /// Deliver what is pending within a short deadline, then stop. Cursors are persisted after
    /// every acknowledged batch, so what was not delivered goes out after the next start.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for (shared, task) in self.sinks.iter().zip(tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(sink = %shared.id, kind = shared.kind, "export sink did not stop in time");
                abort.abort();
            }
        }
    }
}

/// Spawns sinks one by one, sharing what they all need.
struct Starter<'a> {
    sources: &'a BTreeMap<Kind, Arc<dyn Source>>,
    cursor_dir: &'a Path,
    runtime: &'a tokio::runtime::Handle,
    stop: &'a watch::Sender<bool>,
    sinks: Vec<(Arc<Shared>, JoinHandle<()>)>,
}

impl Starter<'_> {
    fn add<D: Deliver>(
        &mut self,
        common: Common<'_>,
        kind: &'static str,
        sink: D,
        pace: Pace,
    ) -> Result<(), ExportError> {
        let cursor_file = CursorFile::new(self.cursor_dir, common.id);
        let mut cursors = cursor_file.load()?;
        let mut lanes = Vec::new();
        for k in common.kinds {
            let Some(source) = self.sources.get(k) else {
                tracing::warn!(
                    sink = common.id,
                    kind,
                    source = k.as_str(),
                    "no such source: not exported"
                );
                continue;
            };
            // A source this sink has never read starts at its head unless asked otherwise.
            let cursor = *cursors.entry(*k).or_insert(match common.from {
                StartFrom::Head => source.head(),
                StartFrom::Beginning => 0,
            });
            lanes.push((*k, source.clone(), cursor));
        }
        // Persist the starting point now: records written before the first delivery must not
        // be skipped by a restart.
        std::fs::create_dir_all(self.cursor_dir).map_err(|e| cursor_file.error(e))?;
        cursor_file
            .store(&cursors)
            .map_err(|e| cursor_file.error(e))?;
        let shared = Arc::new(Shared::new(common.id, kind, common.max_backlog, lanes));
        let runner = Runner {
            shared: shared.clone(),
            sink,
            pace,
            cursor_file,
            stop: self.stop.subscribe(),
        };
        tracing::info!(sink = common.id, kind, "export sink started");
        self.sinks.push((shared, self.runtime.spawn(runner.run())));
        Ok(())
    }
}

fn by_kind(sources: Vec<Arc<dyn Source>>) -> Result<BTreeMap<Kind, Arc<dyn Source>>, ExportError> {
    let mut map = BTreeMap::new();
    for source in sources {
        let name = source.kind();
        let kind = Kind::parse(name)
            .ok_or_else(|| ExportError::Source(format!("unknown kind {name:?}")))?;
        if map.insert(kind, source).is_some() {
            return Err(ExportError::Source(format!("two sources of kind {name:?}")));
        }
    }
    Ok(map)
}

/// Sink ids name cursor files: they must be unique and safe as file names.
fn check_ids(config: &ExportConfig) -> Result<(), ExportError> {
    let ids = config
        .jsonl
        .iter()
        .map(|s| &s.id)
        .chain(config.syslog.iter().map(|s| &s.id))
        .chain(config.webhook.iter().map(|s| &s.id));
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        let safe = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !safe {
            return Err(ExportError::config(
                id,
                "id must be letters, digits, '-', '_' or '.', not starting with '.'",
            ));
        }
        if !seen.insert(id) {
            return Err(ExportError::config(id, "id used by another sink"));
        }
    }
    Ok(())
}
