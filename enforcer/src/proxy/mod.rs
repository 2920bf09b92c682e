//! The local proxy every agent connection is redirected to. For each accepted connection it
//! finds the kernel's record (who, and where to), then: a destination a connector matches is
//! inspected (TLS terminated with a leaf from the local CA, HTTP and MCP parsed, the bound
//! credential injected, forwarded over verified TLS); anything else is refused with a clear
//! reason or, if configured, tunnelled uninspected and recorded.

mod dispatch;
mod events;
mod exchange;
mod flow;
pub mod flows;
pub mod http;
pub mod legs;
mod observe;
mod relay;
pub mod reply;
mod response;
pub mod revocations;
pub mod upstream;
pub mod workers;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use flows::FlowTable;
pub use legs::LegRegistry;

use crate::{
    audit::AuditStore, connectors::Connectors, credentials::CredentialStore, gate::Gate,
    identity::Resolver, sessions::Registry, tls::AgentTls,
};

/// What to do with a flow to a destination no connector matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDestinations {
    /// Refuse, with a clear reason (an HTTP 403 with a JSON-RPC error when the client speaks HTTP).
    #[default]
    Deny,
    /// Relay without inspection, recorded as a connection event.
    Tunnel,
}

/// A live enforcer session with its upstream pool.
pub type SessionHandle = crate::sessions::Session<upstream::UpstreamClient>;

/// What every connection handler shares.
pub struct ProxyContext {
    pub flows: FlowTable,
    pub legs: LegRegistry,
    pub identity: Resolver,
    pub connectors: Connectors,
    pub credentials: CredentialStore,
    pub agent_tls: AgentTls,
    pub sessions: Registry<upstream::UpstreamClient>,
    pub unknown_destinations: UnknownDestinations,
    pub max_body_bytes: usize,
    /// Largest JSON response read whole for masking and receipts; larger ones are refused.
    pub max_response_bytes: usize,
    /// Policy, DLP and rollout mode: every call's verdict.
    pub gate: Arc<Gate>,
    /// Where receipts go (fail closed when it cannot be written).
    pub audit: Arc<AuditStore>,
    /// MCP session ids an admin terminated: requests carrying one get 404 (the client must
    /// initialize again, which policy and revocations then judge).
    pub terminated: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Revoked bindings and connectors (swapped whole when the revocations change).
    pub blocked: arc_swap::ArcSwap<revocations::Blocked>,
    /// The proxy's own listening addresses: an agent dialling them directly is refused, never
    /// relayed back into ourselves.
    pub own_addrs: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    /// Per-tool latency, errors, denials, DLP, sessions (Prometheus, `enforcer top`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Woken after each receipt so SIEM export follows within milliseconds.
    pub exporter: Option<Arc<crate::export::Exporter>>,
}

impl ProxyContext {
    /// Write a receipt (fail closed: the caller refuses what cannot be recorded), then feed
    /// the metrics and wake the exporters.
    /// (Not an `async fn`, so the receipt is not carried in the future: see `append`.)
    pub fn record(
        &self,
        receipt: impl Into<Box<crate::audit::receipt::Receipt>>,
    ) -> impl std::future::Future<
        Output = Result<Box<crate::audit::receipt::Receipt>, crate::audit::AuditError>,
    > + '_ {
        let started = std::time::Instant::now();
        let append = self.audit.append_boxed(receipt.into());
        async move {
            let stored = append.await?;
            self.metrics.audit_write(started.elapsed());
            observe::receipt(&self.metrics, &stored);
            if let Some(x) = &self.exporter {
                x.notify();
            }
            Ok(stored)
        }
    }
}

/// Accept forever on `listener`. Per-connection errors end that connection only; accept
/// errors (e.g. out of fds) back off briefly instead of spinning.
pub async fn serve(listener: TcpListener, ctx: Arc<ProxyContext>) {
    let local = listener.local_addr().ok();
    info!(?local, "proxy listening");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                tokio::spawn(async move { dispatch::handle(stream, peer, ctx).await });
            }
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Close sessions idle past their connector's limit, every second.
pub async fn reap_idle_sessions(ctx: Arc<ProxyContext>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for id in ctx.sessions.reap_idle() {
            info!(session = %id, "idle session closed on both legs");
        }
    }
}
