//! What every request on one client connection shares: the session, connector and the
//! kernel-derived actor.

use std::sync::Arc;

use super::{
    upstream::{FlowUpstream, UpstreamClient, UpstreamConnector},
    ProxyContext,
};
use crate::{connectors::Connector, identity::Actor, sessions::Session};

/// Everything a request on one client flow needs.
pub struct Flow {
    pub ctx: Arc<ProxyContext>,
    pub session: Arc<Session<UpstreamClient>>,
    pub connector: Arc<Connector>,
    pub actor: Actor,
    /// This client connection, as "agent addr -> proxy addr" (what `ss` shows).
    pub client_flow: String,
    /// "https" or "http" toward the backend.
    pub upstream_scheme: &'static str,
    /// Authority to use when the request carries no Host (SNI:port or the destination).
    pub default_authority: String,
    /// How to reach the backend, and this flow's own connection to it (HTTP/1 client flows;
    /// HTTP/2 ones use the session's pool).
    pub upstream: UpstreamConnector,
    pub dedicated: FlowUpstream,
}
