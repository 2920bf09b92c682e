//! The way back: a server's response on its way to the agent. JSON bodies are read whole
//! (bounded), SSE streams event by event (each event released as soon as it is complete and
//! judged: never the whole stream); every server message is masked, tools/list results are
//! filtered, and each call's receipt is written before the message answering it is released.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use tracing::{debug, warn};

use super::{
    exchange::Exchange,
    reply::{full, rpc_error},
    upstream::{BackendFlow, BoxError, ProxyBody},
};
use crate::mcp::{self, jsonrpc, sse};

/// Turn the upstream response into what the agent receives.
pub async fn respond(
    resp: Response<Incoming>,
    mut exchange: Exchange,
    max_response_bytes: usize,
) -> Response<ProxyBody> {
    exchange.set_backend_flow(
        resp.extensions().get::<BackendFlow>().map(|b| &b.0),
        resp.headers()
            .get(mcp::headers::SESSION_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let status = resp.status();
    let media_type = |prefix: &str| {
        resp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.as_bytes().get(..prefix.len()))
            .is_some_and(|v| v.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let (sse, json) = (
        media_type("text/event-stream"),
        media_type("application/json"),
    );
    let (mut parts, body) = resp.into_parts();
    if sse {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, sse_body(body, exchange));
    }
    if !json {
        // 202 for notifications, errors in HTML, 404 for an ended session...: passed through;
        // the calls it answered (if any) are recorded with the HTTP status.
        let outcome = if status.is_success() {
            "no_response"
        } else {
            "http_error"
        };
        let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
        if let Err(e) = exchange
            .record_unanswered(outcome, Some(status.as_u16()), error)
            .await
        {
            return audit_failed(&e);
        }
        return Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
    }
    let bytes = match read_limited(body, max_response_bytes).await {
        Ok(b) => b,
        Err(why) => {
            let _ = exchange
                .record_unanswered("upstream_error", Some(status.as_u16()), Some(why.clone()))
                .await;
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                jsonrpc::ENFORCER_REFUSED,
                &why,
                Some(serde_json::json!({ "reason_code": "response_not_inspectable" })),
            );
        }
    };
    let out = match judge_json(&bytes, &mut exchange).await {
        Ok(Some(changed)) => changed,
        Ok(None) => bytes,
        Err(e) => return audit_failed(&e),
    };
    let outcome = if status.is_success() {
        "no_response"
    } else {
        "http_error"
    };
    let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
    exchange.sent(out.len());
    if let Err(e) = exchange
        .record_unanswered(outcome, Some(status.as_u16()), error)
        .await
    {
        return audit_failed(&e);
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, full(out))
}

/// Judge every message of a document (one message or a batch); true when any changed.
fn judge_messages(doc: &mut Value, exchange: &mut Exchange) -> bool {
    let mut changed = false;
    match doc {
        Value::Array(items) => {
            for item in items.iter_mut() {
                changed |= exchange.on_server_message(item);
            }
        }
        Value::Object(_) => changed |= exchange.on_server_message(doc),
        _ => {}
    }
    changed
}

/// Mask / filter the messages of a JSON body and record the calls it answers. Some(new body)
/// when it changed.
async fn judge_json(
    bytes: &Bytes,
    exchange: &mut Exchange,
) -> Result<Option<Bytes>, crate::audit::AuditError> {
    // Most bodies are one answer nothing masks: judged from the text, released as they came.
    let fast = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| exchange.on_server_text(text));
    if fast.is_some() {
        exchange.record_answered(bytes.len()).await?;
        return Ok(None);
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(None);
    };
    let changed = judge_messages(&mut doc, exchange).then(|| Bytes::from(doc.to_string()));
    let released = changed.as_ref().map_or(bytes.len(), Bytes::len);
    exchange.record_answered(released).await?;
    Ok(changed)
}

fn audit_failed(e: &crate::audit::AuditError) -> Response<ProxyBody> {
    warn!(error = %e, "audit store unavailable: response withheld");
    rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &Value::Null,
        jsonrpc::AUDIT_UNAVAILABLE,
        "the enforcer could not record this call, so its result is withheld",
        Some(serde_json::json!({ "reason_code": "audit_unavailable" })),
    )
}

async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, String> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the MCP server's response broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(format!(
                    "the MCP server's response exceeds the enforcer's inspection limit of {limit} bytes"
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

struct SseState {
    body: Incoming,
    session: std::sync::Arc<super::SessionHandle>,
    splitter: sse::SseSplitter,
    exchange: Exchange,
    out: VecDeque<Bytes>,
    ended: bool,
}

/// An SSE body released event by event.
fn sse_body(body: Incoming, exchange: Exchange) -> ProxyBody {
    let state = SseState {
        session: exchange.session(),
        body,
        splitter: sse::SseSplitter::default(),
        exchange,
        out: VecDeque::new(),
        ended: false,
    };
    let s = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.out.pop_front() {
                st.exchange.sent(b.len());
                return Some((Ok(Frame::data(b)), st));
            }
            if st.ended {
                return None;
            }
            let next = tokio::select! {
                f = st.body.frame() => f,
                _ = st.session.cancelled() => {
                    // The session was ended: each call still open gets its error event.
                    let reason = st.session.close_reason().unwrap_or_else(|| {
                        crate::sessions::CloseReason::new("session_terminated", "the session was ended")
                    });
                    let open = st.exchange.open_call_ids();
                    tracing::info!(reason_code = %reason.code, calls = open.len(), "session ended: in-flight calls on this stream answered");
                    for id in open {
                        st.out.push_back(error_event(
                            &id,
                            jsonrpc::SESSION_ENDED,
                            &reason.message,
                            &reason.code,
                        ));
                    }
                    let _ = st
                        .exchange
                        .record_unanswered("terminated", Some(200), Some(reason.message.clone()))
                        .await;
                    st.ended = true;
                    continue;
                }
            };
            match next {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match st.splitter.feed(&data) {
                        Ok(events) => {
                            for ev in events {
                                match judge_event(&ev, &mut st.exchange).await {
                                    Ok(bytes) => st.out.push_back(bytes),
                                    Err(e) => {
                                        warn!(error = %e, "audit store unavailable: stream cut");
                                        st.out.push_back(audit_error_event());
                                        st.ended = true;
                                        break;
                                    }
                                }
                            }
                        }
                        Err(sse::EventTooLarge) => {
                            warn!("SSE event over the inspection limit: stream cut");
                            let _ = st
                                .exchange
                                .record_unanswered(
                                    "upstream_error",
                                    Some(200),
                                    Some("an SSE event exceeded the inspection limit".into()),
                                )
                                .await;
                            st.ended = true;
                        }
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "upstream stream broke off");
                    let _ = st
                        .exchange
                        .record_unanswered("upstream_error", Some(200), Some(e.to_string()))
                        .await;
                    return Some((Err(Box::new(e) as BoxError), st));
                }
                None => {
                    let rest = st.splitter.take_rest();
                    if !rest.is_empty() {
                        // An unterminated last event: judge it as if it were complete.
                        let ev = sse::Event {
                            data: std::str::from_utf8(&rest)
                                .ok()
                                .map(|t| {
                                    t.lines()
                                        .filter_map(|l| l.strip_prefix("data:"))
                                        .map(|d| d.trim_start())
                                        .collect::<Vec<_>>()
                                        .join("\n")
                                })
                                .filter(|d| !d.is_empty()),
                            raw: rest,
                        };
                        match judge_event(&ev, &mut st.exchange).await {
                            Ok(b) => st.out.push_back(b),
                            Err(_) => st.out.push_back(audit_error_event()),
                        }
                    }
                    let _ = st
                        .exchange
                        .record_unanswered(
                            "no_response",
                            Some(200),
                            Some("the server ended the stream without answering".into()),
                        )
                        .await;
                    st.ended = true;
                }
            }
        }
    });
    StreamBody::new(s).boxed()
}

/// One SSE event: unchanged bytes unless masking or filtering changed its message; the calls
/// it answers are recorded first.
async fn judge_event(
    ev: &sse::Event,
    exchange: &mut Exchange,
) -> Result<Bytes, crate::audit::AuditError> {
    let Some(data) = &ev.data else {
        return Ok(Bytes::from(ev.raw.clone()));
    };
    if exchange.on_server_text(data).is_some() {
        let out = Bytes::from(ev.raw.clone());
        exchange.record_answered(out.len()).await?;
        return Ok(out);
    }
    let Ok(mut doc) = serde_json::from_str::<Value>(data) else {
        return Ok(Bytes::from(ev.raw.clone()));
    };
    let out = if judge_messages(&mut doc, exchange) {
        Bytes::from(ev.with_data(&doc.to_string()))
    } else {
        Bytes::from(ev.raw.clone())
    };
    exchange.record_answered(out.len()).await?;
    Ok(out)
}

fn audit_error_event() -> Bytes {
    error_event(
        &Value::Null,
        jsonrpc::AUDIT_UNAVAILABLE,
        "the enforcer could not record this call, so its result is withheld",
        "audit_unavailable",
    )
}

/// A JSON-RPC error as one SSE event.
fn error_event(id: &Value, code: i64, message: &str, reason_code: &str) -> Bytes {
    let body = jsonrpc::error_body(
        id,
        code,
        message,
        Some(serde_json::json!({ "reason_code": reason_code })),
    );
    let mut ev = b"event: message\ndata: ".to_vec();
    ev.extend_from_slice(&body);
    ev.extend_from_slice(b"\n\n");
    Bytes::from(ev)
}
