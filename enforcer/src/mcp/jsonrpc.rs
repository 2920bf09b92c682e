//! JSON-RPC 2.0 framing: parse single messages and batches, and build well-formed errors.

use bytes::Bytes;
use serde_json::{json, value::RawValue, Value};

use crate::jsonview::Node;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
/// MCP: a request's Mcp-* headers do not match its body (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;
/// Enforcer-side refusals (policy denials and the like) use the implementation-defined range.
pub const ENFORCER_REFUSED: i64 = -32001;
/// A call the policy (or a DLP block) refused; `error.data` carries the diagnostics.
pub const POLICY_DENIED: i64 = -32003;
/// A call that needs an approval first; `error.data` carries the receipt to approve.
pub const APPROVAL_REQUIRED: i64 = -32004;
/// The audit store could not record the call, so it was not released (fail closed).
pub const AUDIT_UNAVAILABLE: i64 = -32005;
/// The call's session was ended while it was in flight (terminated by an admin, revoked, idle
/// limit); `error.data.reason_code` says which.
pub const SESSION_ENDED: i64 = -32006;

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: Value,
        result: Option<Value>,
        error: Option<Value>,
    },
}

impl Message {
    pub fn id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => Some(id),
            Message::Notification { .. } => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }

    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => Some(params),
            Message::Response { .. } => None,
        }
    }
}

/// A parsed body: one message or a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub messages: Vec<Message>,
    pub batch: bool,
}

/// Why a body is not acceptable JSON-RPC, with the id to answer when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub id: Value,
}

pub fn parse(body: &[u8]) -> Result<Parsed, RpcError> {
    // Each message is read straight into its envelope: no map of its members is built
    // (hashing each key) only to be taken apart.
    if first_byte(body) == Some(b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| parse_error(&e))?;
        if items.is_empty() {
            return Err(invalid(Value::Null, "empty batch"));
        }
        let messages = items
            .into_iter()
            .map(|item| message(item.get().as_bytes()))
            .collect::<Result<_, _>>()?;
        return Ok(Parsed {
            messages,
            batch: true,
        });
    }
    Ok(Parsed {
        messages: vec![message(body)?],
        batch: false,
    })
}

fn first_byte(json: &[u8]) -> Option<u8> {
    json.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// One message: a JSON object with JSON-RPC's members.
fn message(json: &[u8]) -> Result<Message, RpcError> {
    if first_byte(json) != Some(b'{') {
        // Valid JSON but not an object (a syntax error is a parse error).
        return match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
            Ok(_) => Err(invalid(Value::Null, "a message must be a JSON object")),
            Err(e) => Err(parse_error(&e)),
        };
    }
    let env: Envelope = serde_json::from_slice(json).map_err(|e| match e.classify() {
        // A member twice (the server may read the other one): refused, not guessed.
        serde_json::error::Category::Data => invalid(Value::Null, &e.to_string()),
        _ => parse_error(&e),
    })?;
    env.message()
}

fn parse_error(e: &serde_json::Error) -> RpcError {
    RpcError {
        code: PARSE_ERROR,
        message: format!("Parse error: {e}"),
        id: Value::Null,
    }
}

fn invalid(id: Value, why: &str) -> RpcError {
    RpcError {
        code: INVALID_REQUEST,
        message: format!("Invalid Request: {why}"),
        id,
    }
}

/// The members of one message that JSON-RPC defines; `Some(Value::Null)` for a member sent as
/// `null`, `None` for one absent.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// A server's answer to a request, read from a text view of the message (see
/// [`crate::jsonview`]): no tree of `Value`s is built for its result or error.
#[derive(Debug)]
pub struct Reply<'v, 'a> {
    pub id: Value,
    pub result: Option<&'v Node<'a>>,
    pub error: Option<&'v Node<'a>>,
}

impl<'v, 'a> Reply<'v, 'a> {
    /// `Some` only for one JSON object with an `id` and exactly one of `result` and `error`
    /// (a member sent as `null` counts as sent), no `method` and no member sent twice;
    /// batches, requests, notifications and anything odd are `None`.
    pub fn of(doc: &'v Node<'a>) -> Option<Self> {
        if !matches!(doc, Node::Object(_))
            || doc.has_duplicate_keys()
            || doc.get("method").is_some()
        {
            return None;
        }
        let (result, error) = (doc.get("result"), doc.get("error"));
        if result.is_some() == error.is_some() {
            return None;
        }
        Some(Reply {
            id: doc.get("id")?.to_value(),
            result,
            error,
        })
    }

    /// The result says the tool failed (`"isError": true`).
    pub fn is_tool_error(&self) -> bool {
        self.result.and_then(|r| r.get("isError")) == Some(&Node::Bool(true))
    }
}

impl Envelope {
    fn message(self) -> Result<Message, RpcError> {
        let id = self.id;
        if let Some(id) = &id {
            if !(id.is_string() || id.is_number() || id.is_null()) {
                return Err(invalid(Value::Null, "id must be a string or a number"));
            }
        }
        if self.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
            return Err(invalid(
                id.unwrap_or(Value::Null),
                "\"jsonrpc\" must be \"2.0\"",
            ));
        }
        match self.method {
            Some(Value::String(method)) => {
                let params = self.params.unwrap_or(Value::Null);
                if !(params.is_object() || params.is_array() || params.is_null()) {
                    return Err(invalid(
                        id.unwrap_or(Value::Null),
                        "params must be an object or array",
                    ));
                }
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            Some(_) => Err(invalid(
                id.unwrap_or(Value::Null),
                "method must be a string",
            )),
            None => {
                let (result, error) = (self.result, self.error);
                match (id, result.is_some() ^ error.is_some()) {
                    (Some(id), true) => Ok(Message::Response { id, result, error }),
                    (id, _) => Err(invalid(
                        id.unwrap_or(Value::Null),
                        "a response needs an id and exactly one of result or error",
                    )),
                }
            }
        }
    }
}

/// A JSON-RPC error response body.
pub fn error_body(id: &Value, code: i64, message: &str, data: Option<Value>) -> Bytes {
    Bytes::from(error_value(id, code, message, data).to_string())
}

pub fn error_value(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

impl Message {
    /// The message as JSON again (after the enforcer changed it).
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                let mut v = json!({ "jsonrpc": "2.0", "id": id, "method": method });
                if !params.is_null() {
                    v["params"] = params.clone();
                }
                v
            }
            Message::Notification { method, params } => {
                let mut v = json!({ "jsonrpc": "2.0", "method": method });
                if !params.is_null() {
                    v["params"] = params.clone();
                }
                v
            }
            Message::Response { id, result, error } => {
                let mut v = json!({ "jsonrpc": "2.0", "id": id });
                if let Some(r) = result {
                    v["result"] = r.clone();
                }
                if let Some(e) = error {
                    v["error"] = e.clone();
                }
                v
            }
        }
    }
}

/// A body again from its messages.
pub fn serialize(parsed: &Parsed) -> Bytes {
    let v = if parsed.batch {
        Value::Array(parsed.messages.iter().map(Message::to_value).collect())
    } else {
        parsed
            .messages
            .first()
            .map(Message::to_value)
            .unwrap_or(Value::Null)
    };
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_read_from_a_text_view() {
        let reply = |t: &str| {
            let doc = crate::jsonview::parse(t).unwrap();
            Reply::of(&doc).map(|r| {
                (
                    r.id.clone(),
                    r.result.map(Node::to_value),
                    r.error.map(Node::to_value),
                    r.is_tool_error(),
                )
            })
        };
        let r = reply(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":true}}"#);
        assert_eq!(
            r,
            Some((
                json!(7),
                Some(json!({"content": [], "isError": true})),
                None,
                true
            ))
        );
        let r = reply(r#"{"id":"a","error":{"code":-1,"message":"no"}}"#);
        assert_eq!(
            r,
            Some((
                json!("a"),
                None,
                Some(json!({"code": -1, "message": "no"})),
                false
            ))
        );
        assert_eq!(
            reply(r#"{"id":1,"result":null}"#),
            Some((json!(1), Some(Value::Null), None, false))
        );
        assert!(!reply(r#"{"id":1,"result":{"isError":"true"}}"#).unwrap().3);
        // Not a single answer: left to the full path.
        for text in [
            r#"[{"id":1,"result":{}}]"#,
            r#"{"id":1,"method":"x","result":{}}"#,
            r#"{"id":1,"result":{},"error":{}}"#,
            r#"{"id":1}"#,
            r#"{"result":{}}"#,
            r#"{"id":1,"id":2,"result":{}}"#,
            "[1, 2, 3]",
            "7",
        ] {
            assert!(reply(text).is_none(), "{text}");
        }
    }

    #[test]
    fn parses_requests_notifications_responses_and_batches() {
        let p = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(!p.batch);
        assert_eq!(p.messages[0].method(), Some("tools/list"));
        let p = parse(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#).unwrap();
        assert!(p.batch);
        assert!(matches!(p.messages[0], Message::Notification { .. }));
        assert!(matches!(p.messages[1], Message::Response { .. }));
    }

    #[test]
    fn malformed_bodies_get_the_right_codes() {
        assert_eq!(parse(b"{nope").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(b"42").unwrap_err().code, INVALID_REQUEST);
        let e = parse(br#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (INVALID_REQUEST, json!(7)));
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#)
                .unwrap_err()
                .code,
            INVALID_REQUEST
        );
    }

    #[test]
    fn single_messages_and_batch_elements_are_read_alike() {
        for body in [
            r#"{"jsonrpc":"2.0","id":null,"method":"x","params":null,"extra":[1,{"a":2}]}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":null}"#,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"p":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            r#"{"id":9,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            let single = parse(body.as_bytes()).map(|p| p.messages);
            let element = parse(format!("[{body}]").as_bytes()).map(|p| p.messages);
            assert_eq!(single, element, "{body}");
        }
        // `"id": null` is a request with a null id, not a notification.
        let p = parse(br#"  {"jsonrpc":"2.0","id":null,"method":"x"}"#).unwrap();
        assert_eq!(p.messages[0].id(), Some(&Value::Null));
    }

    #[test]
    fn a_member_sent_twice_is_refused() {
        // The proxy and the server could each read a different one.
        let e = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#)
            .unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST, "{e:?}");
        assert!(e.message.contains("duplicate"), "{e:?}");
        let e = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"id":3,"method":"ping"}]"#)
            .unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST, "in a batch too: {e:?}");
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","#).unwrap_err().code,
            PARSE_ERROR
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0"} x"#).unwrap_err().code,
            PARSE_ERROR
        );
    }

    #[test]
    fn error_bodies_are_well_formed() {
        let b = error_body(&json!(3), PARSE_ERROR, "bad", Some(json!({"reason": "x"})));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        assert_eq!(v["error"]["data"]["reason"], "x");
    }
}
