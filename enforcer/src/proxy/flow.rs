//! What every request on one client connection shares: the session, connector and the
//! kernel-derived actor.

use std::sync::Arc;

use super::{
    upstream::{FlowUpstream, UpstreamClient, UpstreamConnector},
    ProxyContext,
};
use crate::{
    audit::receipt::{ActorChain, Text},
    connectors::Connector,
    identity::Actor,
    sessions::Session,
};

/// Everything a request on one client flow needs.
pub struct Flow {
    pub ctx: Arc<ProxyContext>,
    pub session: Arc<Session<UpstreamClient>>,
    pub connector: Arc<Connector>,
    pub actor: Actor,
    /// "https" or "http" toward the backend.
    pub upstream_scheme: &'static str,
    /// Authority to use when the request carries no Host (SNI:port or the destination).
    pub default_authority: String,
    /// How to reach the backend, and this flow's own connection to it (HTTP/1 client flows;
    /// HTTP/2 ones use the session's pool).
    pub upstream: UpstreamConnector,
    pub dedicated: FlowUpstream,
    /// What every receipt of this flow repeats, made once.
    pub texts: FlowTexts,
}

/// The parts of a receipt every call on one flow repeats: made once with the flow, shared
/// (not copied) into each receipt.
pub struct FlowTexts {
    pub actor: ActorChain,
    pub session: Text,
    pub client_flow: Text,
    pub connector: Text,
    pub route: Text,
    pub backend: Text,
}

impl FlowTexts {
    pub fn new(actor: &Actor, session: &str, client_flow: &str, connector: &Connector) -> Self {
        FlowTexts {
            actor: super::events::actor_chain(actor),
            session: session.into(),
            client_flow: client_flow.into(),
            connector: connector.id.as_str().into(),
            route: connector.route_name.as_str().into(),
            backend: connector.backend.display.as_str().into(),
        }
    }
}
