//! One accepted connection: identify it from the kernel record, tell TLS from plaintext, find
//! its connector, and hand it to the inspecting HTTP proxy, the tunnel, or a refusal.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use enforcer_common::LEG_CLIENT;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{info_span, warn, Instrument as _};

use super::{
    events,
    flow::Flow,
    http, relay,
    upstream::{self, UpstreamConnector},
    ProxyContext, UnknownDestinations,
};
use crate::{
    connectors::Scheme,
    identity::Actor,
    kernel::addr::{canonical, from_words},
    sessions::{Owner, SessionKey},
};

const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn handle(client: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Some(rec) = ctx.flows.lookup(peer, local) else {
        // Not an agent connection the kernel redirected: no identity, no service.
        warn!(%peer, %local, "refused: no kernel record for this connection");
        return;
    };
    let actor = ctx.identity.resolve(&rec);
    let dest = SocketAddr::new(from_words(rec.orig_ip), rec.orig_port);
    let span = info_span!(
        "flow",
        agent = %actor.agent,
        instance = %actor.instance,
        user = %actor.user,
        pid = actor.pid,
        exe = %actor.exe,
        dest = %dest,
        sni = tracing::field::Empty,
    );
    async move {
        if ctx
            .own_addrs
            .iter()
            .any(|a| canonical(*a) == canonical(dest))
        {
            warn!("refused: agent dialled the proxy directly");
            return;
        }
        let _client_leg = match ctx.legs.register(&client, &rec, LEG_CLIENT) {
            Ok(g) => g,
            Err(e) => return warn!(error = %e, "refused: cannot register the client leg for kill"),
        };
        if !ctx.connectors.may_match(dest)
            && ctx.unknown_destinations == UnknownDestinations::Tunnel
        {
            return tunnel(client, dest, None, &rec, &actor, &ctx).await;
        }
        let first = match tokio::time::timeout(HELLO_TIMEOUT, peek_first_byte(&client)).await {
            Ok(Some(b)) => b,
            _ => return, // closed or silent: nothing to serve
        };
        let is_tls = first == TLS_HANDSHAKE_RECORD;
        let sni = if is_tls {
            match tokio::time::timeout(HELLO_TIMEOUT, peek_sni(&client)).await {
                Ok(Ok(sni)) => sni,
                Ok(Err(e)) => return warn!(error = %e, "refused: unreadable TLS ClientHello"),
                Err(_) => return warn!("refused: TLS ClientHello timed out"),
            }
        } else {
            None
        };
        if let Some(s) = &sni {
            tracing::Span::current().record("sni", s.as_str());
        }
        let Some(connector) = ctx.connectors.find(sni.as_deref(), dest) else {
            return unknown(client, dest, sni, is_tls, &rec, &actor, &ctx).await;
        };
        let disabled = ctx.blocked.load().connectors.get(&connector.id).cloned();
        if let Some(why) = disabled {
            let refusal = Refusal {
                event: "connector_disabled",
                reason: format!("connector {} is disabled: {why}", connector.id),
            };
            return refuse(client, dest, sni, is_tls, &actor, &ctx, refusal).await;
        }
        let upstream_tls = match connector.backend.scheme {
            Scheme::Https => true,
            Scheme::Http => false,
            Scheme::SameAsAgent => is_tls,
        };
        let host = connector
            .backend
            .host
            .clone()
            .unwrap_or_else(|| dest.ip().to_string());
        let port = connector.backend.port.unwrap_or(dest.port());
        let tls = if upstream_tls {
            let name = connector
                .server_name
                .clone()
                .or_else(|| sni.clone())
                .unwrap_or_else(|| host.clone());
            match ServerName::try_from(name.clone()) {
                Ok(n) => Some((connector.tls.clone(), n)),
                Err(_) => {
                    return warn!(server_name = %name, "refused: invalid upstream server name")
                }
            }
        } else {
            None
        };
        let upstream = UpstreamConnector {
            host,
            port,
            tls,
            connector: connector.clone(),
            legs: ctx.legs.clone(),
            record: rec,
            connect_timeout: ctx.connect_timeout,
        };
        let session = ctx.sessions.get_or_create(
            SessionKey {
                instance_cgroup_id: rec.instance_cgroup_id,
                connector: connector.id.clone(),
            },
            || Owner {
                agent: actor.agent.clone(),
                instance: actor.instance.clone(),
                instance_id: actor.instance_id,
                user: actor.user.clone(),
            },
            connector.idle_timeout,
            || upstream::client(upstream.clone()),
        );
        let client_flow = format!("{peer}->{local}");
        let texts = super::flow::FlowTexts::new(&actor, &session.id, &client_flow, &connector);
        let flow = Arc::new(Flow {
            ctx: ctx.clone(),
            session,
            connector: connector.clone(),
            actor: actor.clone(),
            texts,
            upstream_scheme: if upstream_tls { "https" } else { "http" },
            default_authority: match &sni {
                Some(s) => format!("{s}:{}", dest.port()),
                None => dest.to_string(),
            },
            upstream,
            dedicated: Default::default(),
        });
        if is_tls {
            let name = sni.clone().unwrap_or_else(|| dest.ip().to_string());
            if let Some(tls) = terminate_tls(client, &name, &actor, dest, &ctx).await {
                // Without ALPN, TLS carries HTTP/1.1: HTTP/2 over TLS must be negotiated
                // (RFC 9113 section 3.3; prior knowledge is for cleartext only).
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(crate::tls::ALPN_H2) => http::Protocol::Http2,
                    _ => http::Protocol::Http1,
                };
                http::serve(tls, protocol, flow).await;
            }
        } else {
            http::serve(client, http::Protocol::Detect, flow).await
        }
    }
    .instrument(span)
    .await
}

async fn peek_first_byte(s: &TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match s.peek(&mut b).await {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// Read the SNI from the ClientHello without consuming it (the stream is only peeked), so
/// the connection can still be tunnelled byte for byte.
async fn peek_sni(s: &TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut last = 0;
    loop {
        let n = s.peek(&mut buf).await?;
        if n == 0 || n == last && n == buf.len() {
            return Err(std::io::Error::other(
                "ClientHello too large or connection closed",
            ));
        }
        let mut acceptor = rustls::server::Acceptor::default();
        acceptor.read_tls(&mut &buf[..n])?;
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Ok(accepted.client_hello().server_name().map(String::from))
            }
            Ok(None) => {}
            Err((e, _)) => return Err(std::io::Error::other(e)),
        }
        if n == last {
            // Nothing new yet: wait for more bytes to arrive.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        last = n;
    }
}

async fn terminate_tls(
    client: TcpStream,
    name: &str,
    actor: &Actor,
    dest: SocketAddr,
    ctx: &ProxyContext,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let failed = |detail: String| {
        events::record(
            ctx,
            actor,
            events::Event {
                event: "tls_failure",
                status: "refused",
                destination: dest,
                sni: Some(name),
                detail: Some(detail),
            },
        )
    };
    let config = match ctx.agent_tls.config_for(name) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "refused: cannot mint a certificate");
            return None;
        }
    };
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
    let handshake = match start.await {
        Ok(h) => h.into_stream(config),
        Err(e) => {
            warn!(error = %e, "TLS handshake with the agent failed");
            failed(format!("TLS handshake with the agent failed: {e}"));
            return None;
        }
    };
    match handshake.await {
        Ok(s) => Some(s),
        Err(e) => {
            // Typically the agent does not trust the enforcer's CA (or pins certificates).
            warn!(error = %e, "TLS handshake with the agent failed (does it trust the enforcer's CA?)");
            failed(format!(
                "TLS handshake with the agent failed (does it trust the enforcer's CA, or pin certificates?): {e}"
            ));
            None
        }
    }
}

async fn unknown(
    client: TcpStream,
    dest: SocketAddr,
    sni: Option<String>,
    is_tls: bool,
    rec: &enforcer_common::ConnectRecord,
    actor: &Actor,
    ctx: &ProxyContext,
) {
    let target = match &sni {
        Some(s) => format!("{s}:{} ({dest})", dest.port()),
        None => dest.to_string(),
    };
    match ctx.unknown_destinations {
        UnknownDestinations::Tunnel => tunnel(client, dest, sni.as_deref(), rec, actor, ctx).await,
        UnknownDestinations::Deny => {
            let reason = format!("destination {target} is not an MCP server the enforcer knows: no connector matches it");
            let refusal = Refusal {
                event: "unknown_destination",
                reason,
            };
            refuse(client, dest, sni, is_tls, actor, ctx, refusal).await
        }
    }
}

/// Why a flow is refused: the event (and the agent's reason_code), and a sentence.
struct Refusal {
    event: &'static str,
    reason: String,
}

/// Record a refused flow and tell the agent why, in a form it can read: TLS with a minted
/// leaf, then an HTTP 403 carrying a JSON-RPC error. Non-HTTP clients see the connection close.
async fn refuse(
    client: TcpStream,
    dest: SocketAddr,
    sni: Option<String>,
    is_tls: bool,
    actor: &Actor,
    ctx: &ProxyContext,
    refusal: Refusal,
) {
    events::record(
        ctx,
        actor,
        events::Event {
            event: refusal.event,
            status: "refused",
            destination: dest,
            sni: sni.as_deref(),
            detail: Some(refusal.reason.clone()),
        },
    );
    warn!(event = refusal.event, reason = %refusal.reason, "refused flow");
    if is_tls {
        let name = sni.unwrap_or_else(|| dest.ip().to_string());
        if let Some(tls) = terminate_tls(client, &name, actor, dest, ctx).await {
            http::serve_refusal(tls, refusal.event, refusal.reason).await;
        }
    } else {
        http::serve_refusal(client, refusal.event, refusal.reason).await;
    }
}

/// Relay a flow no connector matches, uninspected, after recording it (refused instead when
/// the record cannot be written: nothing passes unrecorded).
async fn tunnel(
    client: TcpStream,
    dest: SocketAddr,
    sni: Option<&str>,
    rec: &enforcer_common::ConnectRecord,
    actor: &Actor,
    ctx: &ProxyContext,
) {
    let r = events::receipt(
        actor,
        &events::Event {
            event: "unknown_destination",
            status: "tunnelled",
            destination: dest,
            sni,
            detail: Some("relayed without inspection (unknown_destinations = \"tunnel\")".into()),
        },
    );
    if let Err(e) = ctx.record(r).await {
        return warn!(error = %e, "refused: the tunnel cannot be recorded");
    }
    relay::tunnel(client, dest, rec, ctx).await
}
