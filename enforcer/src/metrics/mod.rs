//! Metrics: a Prometheus (OpenMetrics) endpoint on loopback for SREs, and snapshots for
//! `enforcer top`.
//!
//! The proxy records through [`Metrics`] (shared as `Arc<Metrics>`); the typed API keeps
//! label values bounded: outcomes, methods and revocation scopes are closed sets, and tool
//! names, reason codes, detectors and connectors are capped (later names count as
//! `_other`). Session ids, arguments, receipt ids and other free text never become labels.
//!
//! Exported families (all prefixed `enforcer_`):
//! `tool_calls_total{connector,tool,method,outcome}`,
//! `tool_call_duration_seconds{connector,tool}` (histogram),
//! `tool_errors_total{connector,tool,kind=tool|transport}`,
//! `denials_total{connector,tool,reason}`, `dlp_blocks_total{detector}`,
//! `dlp_redactions_total{detector}`, `tool_in_bytes_total{connector,tool}`,
//! `tool_out_bytes_total{connector,tool}`, `sessions_live`,
//! `session_duration_seconds`, `session_calls`, `session_unique_tools` (histograms),
//! `revocations_total{scope}`, `revocation_kill_latency_seconds`,
//! `revocation_flows_killed_total`, `audit_write_duration_seconds`,
//! `build_info{version}`, `kernel_<name>_total`.

mod bounded;
mod config;
mod histogram;
mod kernel;
mod labels;
mod recorder;
mod server;
mod snapshot;
#[cfg(test)]
mod testutil;
mod top;

pub use config::MetricsConfig;
pub use kernel::KernelCounter;
pub use labels::{DlpAction, Outcome, RevocationScope};
pub use recorder::{CallObservation, Metrics};
pub use server::serve;
pub use snapshot::Snapshot;
pub use top::render_top;
