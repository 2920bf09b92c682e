//! The HTTP side of an inspected flow: serve HTTP/1.1 and HTTP/2 to the agent, inspect each
//! MCP message, inject the bound credential, and forward to the backend over the session's
//! pool. Responses stream back frame by frame (SSE is never buffered) while a tap reads the
//! JSON-RPC inside them.

use std::{convert::Infallible, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{
    header,
    uri::{Authority, PathAndQuery},
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn, Instrument as _};

use super::{
    exchange::Exchange,
    flow::Flow,
    reply::{full, rpc_error},
    response,
    upstream::ProxyBody,
};
use crate::{
    credentials::{BindingRef, CredentialMode},
    mcp::{
        self,
        jsonrpc::{self, Message},
    },
};

/// Which HTTP the agent speaks on a connection: under TLS, ALPN tells (HTTP/1.1 when it is
/// absent); on cleartext, detected from the first bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Detect,
}

/// Serve one client connection until it ends or its session is closed.
pub async fn serve<IO>(io: IO, protocol: Protocol, flow: Arc<Flow>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = flow.session.clone();
    let _attached = session.client_flow();
    // HTTP/2 runs each request on a task of its own: carry the flow's span (agent, instance,
    // user, destination) into every request so no log line loses who made it. HTTP/1 runs
    // its requests inside the connection's own poll, where that span is entered already (a
    // second enter and exit per poll cost ~2% of the proxy's CPU).
    let span = match protocol {
        Protocol::Http1 => tracing::Span::none(),
        Protocol::Http2 | Protocol::Detect => tracing::Span::current(),
    };
    let service = hyper::service::service_fn(move |req| {
        let flow = flow.clone();
        // Boxed: hyper moves the service future as the connection's state changes, and the
        // call's state (parsed body, receipts, headers) is kilobytes.
        async move { Ok::<_, Infallible>(Box::pin(handle(req, flow)).await) }
            .instrument(span.clone())
    });
    let io = TokioIo::new(io);
    // ALPN settled HTTP/1: hyper's own HTTP/1 server, without the version sniffing and
    // rewind layer the auto builder runs on every read. (A macro, not a generic function:
    // the connection types' error bounds defeat the `Send` proof of a generic future.)
    macro_rules! drive {
        ($conn:expr) => {{
            let mut conn = std::pin::pin!($conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res { debug!(error = %e, "client connection ended with an error") }
                    return;
                }
                _ = session.cancelled() => {}
            }
            // The session was ended: in-flight calls answer with an error (their handlers see
            // the same cancellation), then the connection closes. A client that does not read
            // its answer does not hold the flow open past the grace period.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SESSION_END_GRACE, conn).await {
                Ok(_) => info!(session = %session.id, "session closed: client flow ended"),
                Err(_) => {
                    info!(session = %session.id, "session closed: client flow dropped after the grace period")
                }
            }
        }};
    }
    match protocol {
        Protocol::Http1 => {
            drive!(hyper::server::conn::http1::Builder::new().serve_connection(io, service))
        }
        Protocol::Http2 => {
            let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
            drive!(builder.serve_connection(io, service))
        }
        Protocol::Detect => {
            let builder = auto::Builder::new(TokioExecutor::new());
            drive!(builder.serve_connection(io, service))
        }
    }
}

/// How long a client flow of an ended session may take to receive its in-flight errors.
pub const SESSION_END_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Serve one client connection with a fixed refusal (`reason_code`: unknown_destination,
/// connector_disabled).
pub async fn serve_refusal<IO>(io: IO, reason_code: &'static str, reason: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reason = Arc::new(reason);
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let reason = reason.clone();
        async move {
            Ok::<_, Infallible>(rpc_error(
                StatusCode::FORBIDDEN,
                &Value::Null,
                jsonrpc::ENFORCER_REFUSED,
                &reason,
                Some(json!({ "reason_code": reason_code })),
            ))
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Headers that belong to one hop and are never forwarded (besides whatever Connection
/// names). Transfer-Encoding is set by hyper per hop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "upgrade",
    "trailer",
    "transfer-encoding",
];

/// By the name's text (names are lowercase): a few string comparisons, not nine
/// `HeaderName` ones.
fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most requests carry none: one pass over the few names present decides (cheaper than a
    // hashed removal per hop-by-hop name).
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    // Whatever Connection names besides the hop-by-hop ones (rare; usually it says
    // "keep-alive" or "close"): any case, as names are normalized.
    let named: Vec<header::HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty() && !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)))
        .filter_map(|name| header::HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in &named {
        h.remove(name);
    }
    // The hop-by-hop ones present, one at a time (a clone of a name present is no copy).
    while let Some(name) = h.keys().find(|k| is_hop_by_hop(k)).cloned() {
        h.remove(&name);
    }
}

enum BodyError {
    TooLarge,
    Incomplete(hyper::Error),
}

/// Past the limit the rest of an oversized body is still read (up to this much) and thrown
/// away, so the client gets a clean 413 rather than a reset stream mid-upload.
const DRAIN_CAP: usize = 16 * 1024 * 1024;

/// Read a request body of at most `limit` bytes.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Incomplete)?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_CAP {
                break;
            }
        }
    }
    if seen > limit {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf.freeze())
    }
}

/// The first call's method and target, for log lines (borrowed: the per-call line is
/// usually filtered out).
fn names(x: &Exchange) -> (&str, &str) {
    x.calls.first().map_or(("", ""), |c| {
        (c.method.as_str(), c.target.as_deref().unwrap_or_default())
    })
}

/// A response that ends a request early (boxed: it is much larger than the Ok values).
type Refusal = Box<Response<ProxyBody>>;

async fn handle(req: Request<Incoming>, flow: Arc<Flow>) -> Response<ProxyBody> {
    let started = Instant::now();
    let _in_flight = flow.session.request();
    let (mut parts, body) = req.into_parts();
    let limit = flow.ctx.max_body_bytes;
    if let Some(sid) = parts
        .headers
        .get(mcp::headers::SESSION_ID)
        .and_then(|v| v.to_str().ok())
    {
        let terminated = flow
            .ctx
            .terminated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sid);
        if terminated {
            info!(
                protocol_session = sid,
                "refused: the session was terminated by an admin"
            );
            return rpc_error(
                StatusCode::NOT_FOUND,
                &Value::Null,
                jsonrpc::ENFORCER_REFUSED,
                "this MCP session was terminated by an administrator",
                Some(json!({ "reason_code": "session_terminated" })),
            );
        }
    }

    let too_large = || {
        warn!(limit, "refused: request body over the limit");
        rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("request body exceeds the enforcer's limit of {limit} bytes"),
            Some(json!({ "reason_code": "body_too_large", "limit_bytes": limit })),
        )
    };
    let mut bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Incomplete(e)) => {
            debug!(error = %e, "client body ended early");
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                jsonrpc::INVALID_REQUEST,
                "incomplete request body",
                None,
            );
        }
    };

    let (mut messages, mut era) = (0, None);
    let mut exchange = if parts.method == Method::POST {
        let mut parsed = match inspect_request(&parts.headers, &bytes, &flow) {
            Ok(p) => p,
            Err(resp) => return *resp,
        };
        messages = parsed.messages.len();
        let this_era = mcp::era(&parts.headers, parsed.messages.first());
        era = Some(this_era);
        let mut exchange = Exchange::judge(
            flow.clone(),
            &parts.headers,
            this_era,
            parts.method.as_str(),
            &mut parsed,
            bytes.len() as u64,
            started,
        );
        for c in exchange.calls.iter().filter(|c| c.method == "tools/call") {
            if let Some(tool) = &c.target {
                flow.session.saw_tool(tool);
            }
        }
        if exchange.refused() {
            // The credential that would have been injected is named (never sent).
            let store = &flow.ctx.credentials;
            if let Some(b) =
                store.binding_for(&flow.connector.id, &flow.actor.agent, &flow.actor.user)
            {
                exchange.set_credential_withheld(&BindingRef {
                    id: b.id.clone(),
                    version: b.version,
                });
            }
            return match exchange.refusal_body().await {
                Ok(body) => json_response(StatusCode::OK, Bytes::from(body.to_string())),
                Err(e) => audit_unavailable(&e),
            };
        }
        if exchange.rewritten {
            bytes = jsonrpc::serialize(&parsed);
        }
        exchange
    } else {
        Exchange::without_calls(flow.clone(), started)
    };
    // Fail closed: while the audit store cannot be written, nothing leaves unrecorded.
    if let Err(e) = flow.ctx.audit.check_writable() {
        return audit_unavailable(&e);
    }
    if let Some(sid) = parts
        .headers
        .get(mcp::headers::SESSION_ID)
        .and_then(|v| v.to_str().ok())
    {
        flow.session.add_protocol_id(sid);
    }

    // The upstream request: same method, path, Host and headers, minus hop-by-hop ones.
    let first_id = exchange
        .calls
        .first()
        .map(|c| c.id.clone())
        .unwrap_or(Value::Null);
    let Some((uri, authority)) = upstream_uri(&parts, &flow) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &first_id,
            jsonrpc::INVALID_REQUEST,
            "invalid Host or path",
            None,
        );
    };
    strip_hop_by_hop(&mut parts.headers);
    if parts.headers.get(header::HOST).is_none() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let (credential_mode, binding) = match apply_credentials(&mut parts.headers, &flow) {
        Ok(x) => x,
        Err(resp) => {
            // Recorded as refused, with the reason the agent reads.
            let why = refusal_reason(&resp);
            if let Err(e) = exchange
                .record_unanswered("refused", Some(resp.status().as_u16()), Some(why))
                .await
            {
                return audit_unavailable(&e);
            }
            return *resp;
        }
    };
    exchange.set_credential(&credential_mode, binding.as_ref());
    if parts.headers.contains_key(mcp::headers::SESSION_ID) {
        let mut last = flow
            .session
            .last_upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none() {
            *last = Some((uri.clone(), parts.headers.clone()));
        }
    }
    parts.uri = uri;
    // An HTTP/1 client sends one request at a time: its flow's own backend connection
    // carries them. HTTP/2 streams run concurrently: they share the session's pool.
    let dedicated = parts.version <= http::Version::HTTP_11;
    parts.version = http::Version::HTTP_11;
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let upstream_req = Request::from_parts(parts, full(bytes));

    let method = upstream_req.method().clone();
    let send = async {
        if dedicated {
            flow.dedicated.request(&flow.upstream, upstream_req).await
        } else {
            flow.session
                .state
                .request(upstream_req)
                .await
                .map_err(Into::into)
        }
    };
    let result = tokio::select! {
        r = send => r,
        _ = flow.session.cancelled() => return session_ended(&flow, &mut exchange, &first_id).await,
    };
    let latency_us = started.elapsed().as_micros() as u64;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let reason = error_chain(&*e);
            let (rpc, tool) = names(&exchange);
            warn!(%method, rpc, tool, latency_us, error = %reason, "upstream request failed");
            if let Err(e) = exchange
                .record_unanswered("upstream_error", None, Some(reason.clone()))
                .await
            {
                return audit_unavailable(&e);
            }
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &first_id,
                jsonrpc::ENFORCER_REFUSED,
                "the enforcer could not reach the MCP server",
                Some(
                    json!({ "reason_code": "upstream_unavailable", "detail": reason, "connector": flow.connector.id }),
                ),
            );
        }
    };
    if let Some(sid) = resp
        .headers()
        .get(mcp::headers::SESSION_ID)
        .and_then(|v| v.to_str().ok())
    {
        flow.session.add_protocol_id(sid);
    }
    // Per call, so debug (the receipt is the record).
    debug!(
        %method,
        rpc = names(&exchange).0,
        tool = names(&exchange).1,
        calls = exchange.calls.len(),
        messages,
        era = ?era,
        status = resp.status().as_u16(),
        latency_us,
        credential_mode = ?credential_mode,
        binding = binding.as_ref().map(|b| b.to_string()).unwrap_or_default(),
        session = %flow.session.id,
        connector = %flow.connector.id,
        route = %flow.connector.route_name,
        backend = %flow.connector.backend.display,
        "forwarded"
    );
    strip_hop_by_hop(resp.headers_mut());
    response::respond(resp, exchange, flow.ctx.max_response_bytes).await
}

/// The backend URI: the flow's scheme, the agent's Host (else the request's authority, else
/// the destination it dialled) and the request's path. Built from the parsed parts, not
/// formatted and parsed again. None when the Host is not a valid authority.
fn upstream_uri(parts: &http::request::Parts, flow: &Flow) -> Option<(Uri, Authority)> {
    let authority = match parts.headers.get(header::HOST) {
        Some(host) => Authority::try_from(host.as_bytes()).ok()?,
        None => match parts.uri.authority() {
            Some(a) => a.clone(),
            None => Authority::try_from(flow.default_authority.as_str()).ok()?,
        },
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(flow.upstream_scheme)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .ok()?;
    Some((uri, authority))
}

/// The session was ended (terminated, revoked, idle) while this call waited for the server:
/// the agent gets a JSON-RPC error for it, not a dropped connection.
async fn session_ended(flow: &Flow, exchange: &mut Exchange, id: &Value) -> Response<ProxyBody> {
    let reason = flow.session.close_reason().unwrap_or_else(|| {
        crate::sessions::CloseReason::new("session_terminated", "the session was ended")
    });
    info!(reason_code = %reason.code, "in-flight call ended with its session");
    if let Err(e) = exchange
        .record_unanswered("terminated", None, Some(reason.message.clone()))
        .await
    {
        return audit_unavailable(&e);
    }
    rpc_error(
        StatusCode::OK,
        id,
        jsonrpc::SESSION_ENDED,
        &reason.message,
        Some(json!({ "reason_code": reason.code })),
    )
}

/// The message of a refusal the proxy built (its JSON-RPC error message).
fn refusal_reason(resp: &Response<ProxyBody>) -> String {
    resp.extensions()
        .get::<super::reply::Reason>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| format!("HTTP {}", resp.status().as_u16()))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn audit_unavailable(e: &crate::audit::AuditError) -> Response<ProxyBody> {
    warn!(error = %e, "refused: the audit store cannot be written");
    rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &Value::Null,
        jsonrpc::AUDIT_UNAVAILABLE,
        "the enforcer cannot record calls right now, so none are let through",
        Some(json!({ "reason_code": "audit_unavailable" })),
    )
}

/// Parse the JSON-RPC body; refuse malformed bodies and lying Mcp-* headers.
fn inspect_request(
    headers: &HeaderMap,
    bytes: &Bytes,
    flow: &Flow,
) -> Result<jsonrpc::Parsed, Refusal> {
    let parsed = jsonrpc::parse(bytes).map_err(|e| {
        warn!(code = e.code, error = %e.message, "refused: malformed JSON-RPC");
        Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            &e.id,
            e.code,
            &e.message,
            None,
        ))
    })?;
    for m in &parsed.messages {
        if let Err(why) = mcp::check_headers(headers, m) {
            warn!(error = %why, "refused: Mcp-* headers do not match the body");
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                m.id().unwrap_or(&Value::Null),
                jsonrpc::HEADER_MISMATCH,
                &why,
                Some(json!({ "reason_code": "header_mismatch" })),
            )));
        }
        if matches!(m, Message::Request { .. }) {
            flow.session.count_call();
        }
        debug!(kind = ?mcp::classify(m), "request message");
    }
    Ok(parsed)
}

/// Inject the bound credential (replacing the agent's Authorization, never adding to it), or
/// record what passes through. A binding whose secret cannot be read refuses the request:
/// falling back to the agent's own token would be a silent downgrade.
fn apply_credentials(
    headers: &mut HeaderMap,
    flow: &Flow,
) -> Result<(CredentialMode, Option<BindingRef>), Refusal> {
    let store = &flow.ctx.credentials;
    let binding = store.binding_for(&flow.connector.id, &flow.actor.agent, &flow.actor.user);
    if let Some(b) = binding {
        if let Some(why) = flow.ctx.blocked.load().bindings.get(&b.id) {
            warn!(binding = %b.id, "refused: the bound credential is revoked");
            return Err(Box::new(rpc_error(
                StatusCode::FORBIDDEN,
                &Value::Null,
                jsonrpc::ENFORCER_REFUSED,
                &format!(
                    "the enforcer's credential binding {} for this server is revoked",
                    b.id
                ),
                Some(
                    json!({ "reason_code": "credential_revoked", "binding": b.id, "detail": why }),
                ),
            )));
        }
    }
    match binding {
        Some(b) => match store.injection(b) {
            Ok(inj) => {
                headers.remove(header::AUTHORIZATION);
                headers.insert(inj.set.0, inj.set.1);
                Ok((CredentialMode::Inject, Some(inj.binding)))
            }
            Err(e) => {
                warn!(error = %e, "refused: bound credential unavailable");
                Err(Box::new(rpc_error(
                    StatusCode::BAD_GATEWAY,
                    &Value::Null,
                    jsonrpc::ENFORCER_REFUSED,
                    "the enforcer's credential for this server is unavailable",
                    Some(json!({ "reason_code": "credential_unavailable", "binding": b.id })),
                )))
            }
        },
        None if headers.contains_key(header::AUTHORIZATION) => {
            Ok((CredentialMode::Passthrough, None))
        }
        None if flow.connector.mtls => Ok((CredentialMode::Mtls, None)),
        None => Ok((CredentialMode::None, None)),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "close, X-Trace-Hop"),
            ("x-trace-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("authorization", "Bearer agent"),
            ("mcp-session-id", "abc"),
            ("host", "mcp.example"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "host", "mcp-session-id"]);
    }

    #[test]
    fn end_to_end_headers_are_untouched() {
        let pairs = [
            ("host", "mcp.example"),
            ("origin", "https://app.example"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-param-region", "eu"),
        ];
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, map(&pairs));
    }
}
