//! MCP inspection: what each JSON-RPC message is (in both protocol eras), whether the
//! 2026-07-28 Mcp-* headers agree with the body, and SSE event framing.

pub mod jsonrpc;
pub mod sse;

/// MCP's HTTP header names, parsed once (a lookup by `&str` parses the name on every call).
pub mod headers {
    use http::HeaderName;

    pub const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
    pub const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
    pub const METHOD: HeaderName = HeaderName::from_static("mcp-method");
    pub const NAME: HeaderName = HeaderName::from_static("mcp-name");
}

use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use jsonrpc::Message;

/// What an MCP message is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    Initialize {
        client: Option<String>,
        protocol_version: Option<String>,
    },
    Discover,
    ToolsList,
    ToolsCall {
        tool: String,
        arguments: Value,
    },
    ResourcesRead {
        uri: String,
    },
    PromptsGet {
        name: String,
    },
    Ping,
    Notification {
        method: String,
    },
    Other {
        method: String,
    },
    Response {
        id: Value,
        error: bool,
    },
}

pub fn classify(m: &Message) -> Kind {
    let str_param = |p: &Value, k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match m {
        Message::Response { id, error, .. } => Kind::Response {
            id: id.clone(),
            error: error.is_some(),
        },
        Message::Notification { method, .. } => Kind::Notification {
            method: method.clone(),
        },
        Message::Request { method, params, .. } => match method.as_str() {
            "initialize" => Kind::Initialize {
                client: params
                    .pointer("/clientInfo/name")
                    .and_then(Value::as_str)
                    .map(|n| {
                        let v = params
                            .pointer("/clientInfo/version")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        format!("{n} {v}").trim().to_string()
                    }),
                protocol_version: params
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
            },
            "server/discover" => Kind::Discover,
            "tools/list" => Kind::ToolsList,
            "tools/call" => Kind::ToolsCall {
                tool: str_param(params, "name"),
                arguments: params.get("arguments").cloned().unwrap_or(Value::Null),
            },
            "resources/read" => Kind::ResourcesRead {
                uri: str_param(params, "uri"),
            },
            "prompts/get" => Kind::PromptsGet {
                name: str_param(params, "name"),
            },
            "ping" => Kind::Ping,
            other => Kind::Other {
                method: other.to_string(),
            },
        },
    }
}

/// Protocol era of a request, from its headers and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Era {
    /// 2025-03-26 .. 2025-11-25: initialize and Mcp-Session-Id.
    Session,
    /// 2026-07-28: stateless, server/discover, Mcp-Method / Mcp-Name headers.
    Stateless,
}

pub const STATELESS_VERSION: &str = "2026-07-28";

pub fn era(headers: &HeaderMap, first: Option<&Message>) -> Era {
    let from_body = || {
        let p = first.and_then(Message::params)?;
        p.get("_meta")
            .and_then(|m| m.get("protocolVersion"))
            .or_else(|| p.get("protocolVersion"))
            .and_then(Value::as_str)
    };
    let version = headers
        .get(headers::PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .or_else(from_body);
    let stateless = version.is_some_and(|v| v >= STATELESS_VERSION)
        || headers.contains_key(headers::METHOD)
        || first.and_then(Message::method) == Some("server/discover");
    if stateless {
        Era::Stateless
    } else {
        Era::Session
    }
}

/// Check the 2026-07-28 routing headers against the body: Mcp-Method must equal the method,
/// Mcp-Name the tool / prompt name or resource URI (Base64 as `=?base64?...?=` when it is not
/// header-safe). Policy decides on the body; a mismatch is refused so the two cannot diverge.
pub fn check_headers(headers: &HeaderMap, m: &Message) -> Result<(), String> {
    let Some(method) = m.method() else {
        return Ok(());
    };
    if let Some(h) = headers.get(headers::METHOD) {
        let h = h
            .to_str()
            .map_err(|_| "Mcp-Method is not ASCII".to_string())?;
        if h != method {
            return Err(format!(
                "Mcp-Method {h:?} does not match the body's method {method:?}"
            ));
        }
    }
    if let Some(h) = headers.get(headers::NAME) {
        let h = decode_header_value(
            h.to_str()
                .map_err(|_| "Mcp-Name is not ASCII".to_string())?,
        )?;
        let params = m.params().cloned().unwrap_or(Value::Null);
        let body_name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if h != body_name {
            return Err(format!(
                "Mcp-Name {h:?} does not match the body's {body_name:?}"
            ));
        }
    }
    Ok(())
}

fn decode_header_value(v: &str) -> Result<String, String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64_decode(b64).ok_or("Mcp-Name is not valid Base64")?;
            String::from_utf8(bytes).map_err(|_| "Mcp-Name is not UTF-8".to_string())
        }
        None => Ok(v.to_string()),
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(method: &str, params: Value) -> Message {
        Message::Request {
            id: json!(1),
            method: method.into(),
            params,
        }
    }

    #[test]
    fn classifies_the_methods_that_matter() {
        assert_eq!(
            classify(&req(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "hi"}})
            )),
            Kind::ToolsCall {
                tool: "echo".into(),
                arguments: json!({"text": "hi"})
            }
        );
        assert_eq!(
            classify(&req("resources/read", json!({"uri": "file:///x"}))),
            Kind::ResourcesRead {
                uri: "file:///x".into()
            }
        );
        assert_eq!(
            classify(&req("server/discover", Value::Null)),
            Kind::Discover
        );
        let init = classify(&req(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "clientInfo": {"name": "c", "version": "1"}}),
        ));
        assert_eq!(
            init,
            Kind::Initialize {
                client: Some("c 1".into()),
                protocol_version: Some("2025-06-18".into())
            }
        );
    }

    #[test]
    fn tells_the_eras_apart() {
        let mut h = HeaderMap::new();
        assert_eq!(
            era(
                &h,
                Some(&req("initialize", json!({"protocolVersion": "2025-11-25"})))
            ),
            Era::Session
        );
        assert_eq!(
            era(&h, Some(&req("server/discover", Value::Null))),
            Era::Stateless
        );
        h.insert("mcp-protocol-version", "2026-07-28".parse().unwrap());
        assert_eq!(
            era(&h, Some(&req("tools/list", Value::Null))),
            Era::Stateless
        );
    }

    #[test]
    fn routing_headers_must_match_the_body() {
        let m = req("tools/call", json!({"name": "deploy", "arguments": {}}));
        let mut h = HeaderMap::new();
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "deploy".parse().unwrap());
        assert!(check_headers(&h, &m).is_ok());
        h.insert("mcp-name", "=?base64?ZGVwbG95?=".parse().unwrap());
        assert!(check_headers(&h, &m).is_ok());
        h.insert("mcp-name", "read_only".parse().unwrap());
        assert!(check_headers(&h, &m).unwrap_err().contains("read_only"));
        h.insert("mcp-name", "deploy".parse().unwrap());
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert!(check_headers(&h, &m).is_err());
    }
}
