//! The rehearsal's agent: a small MCP client that runs inside an agent cgroup and does what
//! an incident needs — initializes, lists tools, tries the destructive one (denied), reads a
//! report, then sits in a streaming call (cut by the revocation). Afterwards it behaves like
//! a client that ignores protocol termination: it keeps reconnecting with its old session id,
//! so the drill can show the kernel refusing it. Each event is one JSON line on stdout.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::server::PROTOCOL_VERSION;

fn emit(v: Value) {
    println!("{v}");
}

struct Client {
    addr: String,
    path: String,
    session: Option<String>,
    next_id: u64,
}

/// What came back for one request: the final JSON-RPC message and any progress seen.
struct Answer {
    status: u16,
    message: Option<Value>,
}

impl Client {
    async fn post(&mut self, method: &str, params: Value, notify: bool) -> std::io::Result<Answer> {
        let stream = TcpStream::connect(&self.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let mut msg = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        if !notify {
            self.next_id += 1;
            msg["id"] = json!(self.next_id);
        }
        let mut req = Request::post(&self.path)
            .header(header::HOST, &self.addr)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        let req = req
            .body(Full::new(Bytes::from(msg.to_string())))
            .map_err(std::io::Error::other)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(s.to_string());
        }
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let mut body = resp.into_body();
        let mut message = None;
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    emit(json!({ "stream_broken": e.to_string() }));
                    break;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            if !sse {
                continue;
            }
            // Each complete SSE event: print progress as it arrives, keep the last answer.
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                for line in String::from_utf8_lossy(&event).lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                            if v["method"] == "notifications/progress" {
                                emit(json!({ "progress": v["params"]["progress"] }));
                            } else {
                                message = Some(v);
                            }
                        }
                    }
                }
            }
        }
        if !sse && !buf.is_empty() {
            message = serde_json::from_slice(&buf).ok();
        }
        Ok(Answer { status, message })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Print the outcome of a tool call.
fn report(tool: &str, answer: std::io::Result<Answer>) {
    match answer {
        Ok(Answer {
            message: Some(m),
            status,
        }) if m.get("error").is_some() => emit(json!({
            "call": tool, "http_status": status,
            "error": m["error"]["message"], "code": m["error"]["code"], "data": m["error"]["data"],
        })),
        Ok(Answer {
            message: Some(m), ..
        }) => emit(json!({ "call": tool, "result": m["result"]["content"][0]["text"] })),
        Ok(Answer { status, .. }) => {
            emit(json!({ "call": tool, "http_status": status, "error": "no answer" }))
        }
        Err(e) => {
            emit(json!({ "call": tool, "io_error": e.to_string(), "errno": e.raw_os_error() }))
        }
    }
}

pub async fn run(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the rehearsal agent speaks plain http:// only"))?;
    let (addr, path) = match rest.split_once('/') {
        Some((a, p)) => (a.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/".to_string()),
    };
    let mut c = Client {
        addr,
        path,
        session: None,
        next_id: 0,
    };
    let init = c
        .post(
            "initialize",
            json!({ "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                    "clientInfo": { "name": "enforcer-rehearsal-agent", "version": env!("CARGO_PKG_VERSION") } }),
            false,
        )
        .await?;
    emit(
        json!({ "initialized": init.message.map(|m| m["result"]["serverInfo"]["name"].clone()), "session": c.session }),
    );
    c.post("notifications/initialized", json!({}), true).await?;
    let list = c.post("tools/list", json!({}), false).await?;
    let names: Vec<Value> = list
        .message
        .and_then(|m| m["result"]["tools"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    emit(json!({ "tools": names }));
    let denied = c
        .post(
            "tools/call",
            json!({ "name": "delete_records", "arguments": { "table": "customers" } }),
            false,
        )
        .await;
    report("delete_records", denied);
    let read = c
        .post(
            "tools/call",
            json!({ "name": "read_report", "arguments": {} }),
            false,
        )
        .await;
    report("read_report", read);
    let feed = c
        .post(
            "tools/call",
            json!({ "name": "watch_feed", "arguments": {}, "_meta": { "progressToken": "feed" } }),
            false,
        )
        .await;
    report("watch_feed", feed);
    // The stubborn part: ignore whatever ended the session and keep coming back with the old
    // session id.
    for attempt in 1..=40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = c
            .post(
                "tools/call",
                json!({ "name": "read_report", "arguments": {} }),
                false,
            )
            .await;
        match again {
            Ok(Answer {
                message: Some(m),
                status,
            }) => emit(json!({ "reconnect": attempt, "http_status": status,
                "ok": m.get("result").is_some(), "reason_code": m["error"]["data"]["reason_code"] })),
            Ok(Answer { status, .. }) => {
                emit(json!({ "reconnect": attempt, "http_status": status, "ok": false }))
            }
            Err(e) => emit(
                json!({ "reconnect": attempt, "ok": false, "io_error": e.to_string(), "errno": e.raw_os_error() }),
            ),
        }
    }
    Ok(())
}
