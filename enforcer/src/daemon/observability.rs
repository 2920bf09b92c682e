//! What the daemon starts for SREs beside enforcement: the metrics registry and its loopback
//! endpoint (with the kernel's counters read at scrape time), and the SIEM exporters, which
//! follow the receipts chain and the admin log by sequence number (the logs are the durable
//! queue: a receiver that is down misses nothing).

use std::{path::PathBuf, sync::Arc};

use serde_json::Value;
use tracing::{info, warn};

use crate::{
    audit::AuditStore,
    config::Config,
    control::admin_log::AdminLog,
    export::{Exporter, Source},
    kernel::KernelMaps,
    metrics::{KernelCounter, Metrics},
};

/// The metrics registry, with the BPF counters as a scrape-time source; its endpoint is
/// served when enabled. A port that cannot be bound is logged, never fatal: enforcement
/// matters more than its graphs.
pub async fn start_metrics(config: &Config) -> Arc<Metrics> {
    let metrics = Metrics::new(env!("CARGO_PKG_VERSION"), &config.metrics);
    let pin_dir: PathBuf = config.paths.pin_dir.clone();
    metrics.set_kernel_source(Box::new(move || match KernelMaps::open(&pin_dir) {
        Ok(maps) => maps
            .counters()
            .into_iter()
            .map(|(name, value)| KernelCounter {
                name,
                help: "events counted by the enforcer's kernel programs",
                value,
            })
            .collect(),
        Err(_) => Vec::new(),
    }));
    if config.metrics.enabled {
        match tokio::net::TcpListener::bind(config.metrics.listen).await {
            Ok(listener) => {
                info!(listen = %config.metrics.listen, "metrics endpoint serving /metrics");
                tokio::spawn(crate::metrics::serve(
                    listener,
                    metrics.clone(),
                    std::future::pending(),
                ));
            }
            Err(e) => {
                warn!(listen = %config.metrics.listen, error = %e, "metrics endpoint not served")
            }
        }
    }
    metrics
}

/// The configured exporters, or None when there are none.
pub fn start_export(
    config: &Config,
    audit: Arc<AuditStore>,
    admin: Arc<AdminLog>,
) -> anyhow::Result<Option<Arc<Exporter>>> {
    let e = &config.export;
    if e.jsonl.is_empty() && e.syslog.is_empty() && e.webhook.is_empty() {
        return Ok(None);
    }
    let sources: Vec<Arc<dyn Source>> =
        vec![Arc::new(Receipts(audit)), Arc::new(AdminRecords(admin))];
    let exporter = Exporter::start(e, &config.export_dir(), sources)?;
    info!(sinks = exporter.status().len(), "SIEM export started");
    Ok(Some(Arc::new(exporter)))
}

struct Receipts(Arc<AuditStore>);

impl Source for Receipts {
    fn kind(&self) -> &'static str {
        "receipt"
    }

    fn head(&self) -> u64 {
        self.0.len().unwrap_or(0)
    }

    fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, Value)>, String> {
        let records = self.0.records_after(after, max);
        events(records.map_err(|e| e.to_string())?, |r| r.seq)
    }
}

/// Records as (sequence number, JSON) for the exporters.
fn events<R: serde::Serialize>(
    records: Vec<R>,
    seq: impl Fn(&R) -> u64,
) -> Result<Vec<(u64, Value)>, String> {
    records
        .into_iter()
        .map(|r| {
            Ok((
                seq(&r),
                serde_json::to_value(&r).map_err(|e| e.to_string())?,
            ))
        })
        .collect()
}

struct AdminRecords(Arc<AdminLog>);

impl Source for AdminRecords {
    fn kind(&self) -> &'static str {
        "admin"
    }

    fn head(&self) -> u64 {
        self.0.head_seq().unwrap_or(0)
    }

    fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, Value)>, String> {
        let records = self.0.records_after(after, max);
        events(records.map_err(|e| e.to_string())?, |r| r.seq)
    }
}
