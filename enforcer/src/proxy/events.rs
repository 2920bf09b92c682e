//! Receipts for connection-level events: flows refused or tunnelled before any MCP message
//! (unknown destination), and TLS failures with the agent.

use std::net::SocketAddr;

use tracing::warn;

use super::ProxyContext;
use crate::{
    audit::receipt::{ActorChain, ConnectionEvent, Outcome, Receipt, ReceiptKind, Surface},
    identity::Actor,
};

pub struct Event<'a> {
    /// "unknown_destination", "tls_failure", ...
    pub event: &'a str,
    /// Outcome status: "refused", "tunnelled", ...
    pub status: &'a str,
    pub destination: SocketAddr,
    pub sni: Option<&'a str>,
    pub detail: Option<String>,
}

/// The actor chain as the kernel identified it (the client's words are added by the caller).
pub fn actor_chain(actor: &Actor) -> ActorChain {
    ActorChain {
        user: actor.user.as_str().into(),
        uid: actor.uid,
        agent: actor.agent.as_str().into(),
        instance: actor.instance.as_str().into(),
        instance_id: actor.instance_id,
        pid: actor.pid,
        surface: Surface {
            exe: actor.exe.as_str().into(),
            ..Default::default()
        },
    }
}

pub fn receipt(actor: &Actor, e: &Event<'_>) -> Receipt {
    Receipt {
        actor: actor_chain(actor),
        outcome: Outcome {
            status: e.status.into(),
            error: e.detail.as_deref().map(Into::into),
            ..Default::default()
        },
        event: Some(ConnectionEvent {
            event: e.event.into(),
            destination: Some(e.destination.to_string().into()),
            sni: e.sni.map(Into::into),
            detail: e.detail.as_deref().map(Into::into),
        }),
        ..Receipt::stamped(ReceiptKind::Connection)
    }
}

/// Record a connection event (in the background: the flow it describes is already decided).
pub fn record(ctx: &ProxyContext, actor: &Actor, e: Event<'_>) {
    let r = receipt(actor, &e);
    let audit = ctx.audit.clone();
    tokio::spawn(async move {
        if let Err(err) = audit.append(r).await {
            warn!(error = %err, "could not record a connection event");
        }
    });
}
