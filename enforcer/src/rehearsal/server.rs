//! The rehearsal's MCP server: Streamable HTTP (session era) on loopback, three tools — a
//! harmless read, a destructive delete the rehearsal policy forbids, and a slow feed that
//! streams progress notifications over SSE for a minute (the in-flight call the drill cuts).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::stream;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Progress events of `watch_feed`: one every FEED_TICK, for a minute.
const FEED_EVENTS: u64 = 300;
const FEED_TICK: Duration = Duration::from_millis(200);

/// Serve on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req| async { Ok::<_, Infallible>(handle(req).await) });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Bind a loopback port for the server.
pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

fn full(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status;
    r
}

fn tools() -> Value {
    let schema = |props: Value| json!({ "type": "object", "properties": props });
    json!([
        { "name": "read_report", "description": "Read the quarterly report.", "inputSchema": schema(json!({})) },
        { "name": "delete_records", "description": "Delete every record of a table.",
          "inputSchema": schema(json!({ "table": { "type": "string" } })) },
        { "name": "watch_feed", "description": "Stream the live feed (progress notifications for a minute).",
          "inputSchema": schema(json!({})) },
    ])
}

async fn handle(req: Request<Incoming>) -> Response<Body> {
    match *req.method() {
        Method::DELETE => return empty(StatusCode::OK),
        Method::POST => {}
        _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
    }
    let Ok(body) = req.into_body().collect().await else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return full(
            StatusCode::BAD_REQUEST,
            json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32700, "message": "parse error" } }),
        );
    };
    let id = msg["id"].clone();
    let method = msg["method"].as_str().unwrap_or("");
    let ok = |result: Value| json!({ "jsonrpc": "2.0", "id": id, "result": result });
    match method {
        "initialize" => {
            let mut r = full(
                StatusCode::OK,
                ok(json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": { "tools": {} },
                    "serverInfo": { "name": "enforcer-rehearsal-server", "version": env!("CARGO_PKG_VERSION") },
                })),
            );
            let sid = format!("{:016x}", rand_u64());
            r.headers_mut()
                .insert("mcp-session-id", sid.parse().unwrap());
            r
        }
        m if m.starts_with("notifications/") => empty(StatusCode::ACCEPTED),
        "tools/list" => full(StatusCode::OK, ok(json!({ "tools": tools() }))),
        "tools/call" => match msg["params"]["name"].as_str().unwrap_or("") {
            "read_report" => full(
                StatusCode::OK,
                ok(
                    json!({ "content": [{ "type": "text", "text": "Q3 report: 42 widgets shipped" }] }),
                ),
            ),
            "delete_records" => full(
                StatusCode::OK,
                ok(json!({ "content": [{ "type": "text", "text": "deleted 18,000 records" }] })),
            ),
            "watch_feed" => feed(id, msg["params"]["_meta"]["progressToken"].clone()),
            other => full(
                StatusCode::OK,
                json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32602, "message": format!("unknown tool {other}") } }),
            ),
        },
        _ => full(
            StatusCode::OK,
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32601, "message": "method not found" } }),
        ),
    }
}

/// The slow tool: SSE progress events, then the result.
fn feed(id: Value, token: Value) -> Response<Body> {
    let token = if token.is_null() {
        json!("feed")
    } else {
        token
    };
    let events = stream::unfold(0u64, move |i| {
        let (id, token) = (id.clone(), token.clone());
        async move {
            if i > FEED_EVENTS {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(FEED_TICK).await;
            }
            let msg = if i == FEED_EVENTS {
                json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [{ "type": "text", "text": "feed ended" }] } })
            } else {
                json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                        "params": { "progressToken": token, "progress": i + 1, "total": FEED_EVENTS } })
            };
            let frame = Frame::data(Bytes::from(format!("event: message\ndata: {msg}\n\n")));
            Some((Ok::<_, Infallible>(frame), i + 1))
        }
    });
    let mut r = Response::new(StreamBody::new(events).boxed());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    r
}

/// A session id needs to be unique, not secret.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
