//! The local proxy every agent connection is redirected to. For now a transparent TCP relay:
//! accept, find the kernel's record of who connected and where to, log it in a span, and
//! relay to the original destination. The TLS-terminating MCP proxy replaces the relay for
//! MCP traffic.

pub mod flows;
pub mod legs;
mod relay;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use flows::FlowTable;
pub use legs::LegRegistry;

use crate::identity::Resolver;

/// What every connection handler shares.
pub struct ProxyContext {
    pub flows: FlowTable,
    pub legs: LegRegistry,
    pub identity: Resolver,
    /// The proxy's own listening addresses: an agent dialling them directly is refused, never
    /// relayed back into ourselves.
    pub own_addrs: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

/// Accept forever on `listener`. Per-connection errors end that connection only; accept
/// errors (e.g. out of fds) back off briefly instead of spinning.
pub async fn serve(listener: TcpListener, ctx: Arc<ProxyContext>) {
    let local = listener.local_addr().ok();
    info!(?local, "proxy listening");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { relay::handle(stream, peer, ctx).await });
            }
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
