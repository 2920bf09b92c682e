//! One HTTP request's MCP calls on their way through the proxy: the verdict each got, and the
//! receipt each gets once its answer is known. A receipt is appended before the answer (the
//! server's response, or the enforcer's refusal) is released to the agent; if it cannot be
//! written, the agent gets an error instead of the answer.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use http::{HeaderMap, HeaderName};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use super::flow::Flow;
use crate::{
    audit::{
        canonical,
        receipt::{
            ConnectorPath, CredentialRef, Outcome, Receipt, ReceiptKind, RequestInfo, RouteStatus,
            SessionRef,
        },
    },
    credentials::{BindingRef, CredentialMode},
    gate::{Call as GateCall, Enforced, Verdict},
    mcp::{self, jsonrpc, jsonrpc::Message},
};

/// Methods whose exchanges get a receipt even when they succeed.
fn of_interest(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "server/discover"
            | "tools/list"
            | "tools/call"
            | "resources/read"
            | "prompts/get"
    )
}

/// Recordings larger than this are kept as a truncated preview.
const RECORDING_MAX: usize = 8 * 1024;

/// One request message awaiting its answer.
pub struct PendingCall {
    pub id: Value,
    pub method: String,
    pub target: Option<String>,
    pub enforced: Enforced,
    receipt: Receipt,
    done: bool,
    /// Answered by the server, its receipt filled in but not written yet: written by
    /// [`Exchange::record_answered`] once the size of what carries the answer is known.
    unrecorded: bool,
}

impl PendingCall {
    /// The filled-in receipt of an answered call, to be written now, with the bytes released
    /// for its exchange.
    fn take_answered(&mut self, bytes_out: u64) -> Receipt {
        self.unrecorded = false;
        let mut r = std::mem::take(&mut self.receipt);
        r.outcome.bytes_out = bytes_out;
        r
    }
}

pub struct Exchange {
    flow: Arc<Flow>,
    started: Instant,
    pub calls: Vec<PendingCall>,
    pub batch: bool,
    /// A detector's `redact` action changed some call's arguments: the body must be rebuilt.
    pub rewritten: bool,
    bytes_out: u64,
}

/// "sha256:<hex>" of the value's canonical JSON (object keys sorted, compact), so the same
/// arguments give the same digest whatever order the agent sent their keys in.
pub fn digest(v: &Value) -> String {
    let bytes = canonical::canonical_json(v);
    let mut out = [0u8; 7 + 64];
    out[..7].copy_from_slice(b"sha256:");
    hex::encode_to_slice(Sha256::digest(&bytes), &mut out[7..]).expect("64 hex digits");
    String::from_utf8_lossy(&out).into_owned()
}

impl Exchange {
    /// Judge every request in the body and draft its receipt.
    pub fn judge(
        flow: Arc<Flow>,
        headers: &HeaderMap,
        era: mcp::Era,
        http_method: &str,
        parsed: &mut jsonrpc::Parsed,
        bytes_in: u64,
        started: Instant,
    ) -> Self {
        let header = |n: &HeaderName| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let protocol_version = header(&mcp::headers::PROTOCOL_VERSION);
        let user_agent = header(&http::header::USER_AGENT);
        let protocol_session = header(&mcp::headers::SESSION_ID);
        let mut calls = Vec::new();
        let mut rewritten = false;
        for m in parsed.messages.iter_mut() {
            let Message::Request { id, method, params } = m else {
                continue;
            };
            if method == "initialize" {
                if let mcp::Kind::Initialize {
                    client: Some(c), ..
                } = mcp::classify(&Message::Request {
                    id: id.clone(),
                    method: method.clone(),
                    params: params.clone(),
                }) {
                    flow.session.set_client(&c);
                }
            }
            let client = flow.session.client().or_else(|| meta_client(params));
            let target = target_of(method, params);
            let arguments = match method.as_str() {
                "tools/call" | "prompts/get" => params.get("arguments").unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
            let actor = &flow.actor;
            let verdict: Verdict = flow.ctx.gate.judge(&GateCall {
                user: &actor.user,
                agent: &actor.agent,
                instance: &actor.instance,
                exe: &actor.exe,
                client: client.as_deref(),
                connector: &flow.connector.id,
                method,
                target: target.as_deref(),
                arguments,
            });
            let arguments_digest = (!arguments.is_null()).then(|| digest(arguments));
            if let Some(forward) = verdict.forward_arguments {
                if let Some(p) = params.as_object_mut() {
                    p.insert("arguments".into(), forward);
                    rewritten = true;
                }
            }
            let status = flow.connector.status();
            let receipt = Receipt {
                request: Some(RequestInfo {
                    jsonrpc_id: id.clone(),
                    method: method.clone(),
                    target: target.clone(),
                    arguments_digest,
                    arguments_redacted: verdict.redacted_arguments,
                    era: Some(match era {
                        mcp::Era::Session => "session".into(),
                        mcp::Era::Stateless => "stateless".into(),
                    }),
                    protocol_version: protocol_version.clone(),
                    http_method: http_method.to_string(),
                }),
                actor: {
                    let mut chain = super::events::actor_chain(actor);
                    chain.surface.client = client;
                    chain.surface.user_agent = user_agent.clone();
                    chain
                },
                session: SessionRef {
                    enforcer_session: flow.session.id.clone(),
                    client_flow: flow.client_flow.clone(),
                    backend_flow: None,
                    protocol_session_id: protocol_session.clone(),
                    state: flow.session.state_name().to_string(),
                    idle_limit_ms: flow.session.idle_limit.as_millis() as u64,
                },
                policy: Some(verdict.ticket),
                credential: CredentialRef {
                    mode: "none".into(),
                    binding: None,
                },
                connector: ConnectorPath {
                    connector: flow.connector.id.clone(),
                    route: flow.connector.route_name.clone(),
                    backend: flow.connector.backend.display.clone(),
                    route_status: RouteStatus {
                        state: match status.reachable {
                            Some(true) => "reachable",
                            Some(false) => "unreachable",
                            None => "unknown",
                        }
                        .into(),
                        last_error: status.last_error,
                        last_latency_us: status.last_latency_us,
                    },
                },
                outcome: Outcome {
                    bytes_in,
                    masking: verdict.findings,
                    ..Default::default()
                },
                event: None,
                recording: None,
                ..Receipt::stamped(ReceiptKind::Exchange)
            };
            calls.push(PendingCall {
                id: id.clone(),
                method: method.clone(),
                target,
                enforced: verdict.enforced,
                receipt,
                done: false,
                unrecorded: false,
            });
        }
        Exchange {
            flow,
            started,
            calls,
            batch: parsed.batch,
            rewritten,
            bytes_out: 0,
        }
    }

    /// For requests that carry no JSON-RPC (GET streams, DELETE): nothing to judge, but what
    /// the server sends back is still masked.
    pub fn without_calls(flow: Arc<Flow>, started: Instant) -> Self {
        Exchange {
            flow,
            started,
            calls: Vec::new(),
            batch: false,
            rewritten: false,
            bytes_out: 0,
        }
    }

    /// Whether any call in this request is refused by the gate.
    pub fn refused(&self) -> bool {
        self.calls.iter().any(|c| c.enforced != Enforced::Allow)
    }

    pub fn set_credential(&mut self, mode: &CredentialMode, binding: Option<&BindingRef>) {
        let mode = match mode {
            CredentialMode::Inject => "inject",
            CredentialMode::Passthrough => "passthrough",
            CredentialMode::Mtls => "mtls",
            CredentialMode::None => "none",
        };
        for c in &mut self.calls {
            c.receipt.credential = CredentialRef {
                mode: mode.into(),
                binding: binding.map(|b| b.to_string()),
            };
        }
    }

    /// The call was refused before injection: the receipt names the binding that would have
    /// been used, with mode "withheld".
    pub fn set_credential_withheld(&mut self, binding: &BindingRef) {
        for c in &mut self.calls {
            c.receipt.credential = CredentialRef {
                mode: "withheld".into(),
                binding: Some(binding.to_string()),
            };
        }
    }

    pub fn set_backend_flow(&mut self, flow: Option<&str>, protocol_session: Option<&str>) {
        for c in &mut self.calls {
            c.receipt.session.backend_flow = flow.map(String::from);
            if c.receipt.session.protocol_session_id.is_none() {
                c.receipt.session.protocol_session_id = protocol_session.map(String::from);
            }
        }
    }

    /// Count bytes released to the agent.
    pub fn sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// The JSON-RPC error each refused call gets, with its diagnostics; calls of the same batch
    /// that were allowed are refused with them (a batch passes whole or not at all). Receipts
    /// are written first; their ids go into the errors.
    pub async fn refusal_body(&mut self) -> Result<Value, crate::audit::AuditError> {
        let mut bodies = Vec::new();
        let refused_by: Vec<Value> = self
            .calls
            .iter()
            .filter(|c| c.enforced != Enforced::Allow)
            .map(|c| c.id.clone())
            .collect();
        for i in 0..self.calls.len() {
            let (code, message, status) = {
                let c = &self.calls[i];
                let ticket = c.receipt.policy.as_ref();
                match c.enforced {
                    Enforced::Allow => (
                        jsonrpc::ENFORCER_REFUSED,
                        "refused with the rest of its batch".to_string(),
                        "refused",
                    ),
                    Enforced::Deny => (
                        jsonrpc::POLICY_DENIED,
                        format!(
                            "denied by policy: {}",
                            ticket.map(|t| t.reason_code.as_str()).unwrap_or("denied")
                        ),
                        "denied",
                    ),
                    Enforced::RequireApproval => (
                        jsonrpc::APPROVAL_REQUIRED,
                        "this call needs an approval before it can run".to_string(),
                        "approval_required",
                    ),
                    Enforced::DlpBlock => (
                        jsonrpc::POLICY_DENIED,
                        "blocked: the arguments carry sensitive data".to_string(),
                        "dlp_blocked",
                    ),
                }
            };
            let c = &mut self.calls[i];
            c.receipt.outcome.status = status.into();
            c.receipt.outcome.rpc_error_code = Some(code);
            c.receipt.outcome.error = Some(message.clone());
            c.receipt.outcome.http_status = Some(200);
            c.receipt.outcome.latency_us = self.started.elapsed().as_micros() as u64;
            let stored = self.flow.ctx.record(std::mem::take(&mut c.receipt)).await?;
            c.done = true;
            let t = stored.policy.clone().unwrap_or_default();
            let mut data = json!({
                "reason_code": if c.enforced == Enforced::Allow { "batch_refused" } else { t.reason_code.as_str() },
                "rule": t.rule,
                "note": t.note,
                "policy_version": t.version,
                "environment": t.environment,
                "receipt": stored.id,
            });
            if c.enforced == Enforced::Allow {
                data["refused_because"] = Value::Array(refused_by.clone());
            }
            if c.enforced == Enforced::DlpBlock {
                data["detectors"] = json!(stored.outcome.masking.keys().collect::<Vec<_>>());
            }
            info!(
                receipt = %stored.id,
                method = %c.method,
                tool = c.target.as_deref().unwrap_or(""),
                outcome = status,
                rule = t.rule.as_deref().unwrap_or(""),
                reason_code = %t.reason_code,
                "refused by the gate"
            );
            bodies.push(jsonrpc::error_value(&c.id, code, &message, Some(data)));
        }
        Ok(if self.batch {
            Value::Array(bodies)
        } else {
            bodies.pop().unwrap_or(Value::Null)
        })
    }

    /// A message from the server inside the response: mask it, filter tools/list results, and
    /// if it answers one of our calls, fill in that call's receipt (written by
    /// [`record_answered`](Self::record_answered) before the message is released). Returns
    /// whether the message changed (and must be re-serialised).
    ///
    /// `sole`: the message is the whole document, so when it is unchanged (its original bytes
    /// go out) its result can move into the recording instead of being copied.
    pub fn on_server_message(&mut self, msg: &mut Value, sole: bool) -> bool {
        let gate = &self.flow.ctx.gate;
        let is_response = msg.get("result").is_some() || msg.get("error").is_some();
        let idx = match msg.get("id") {
            Some(id) if is_response => self.calls.iter().position(|c| !c.done && &c.id == id),
            _ => None,
        };
        let mut changed = false;
        let mut hidden = Vec::new();
        if let (Some(i), Some(result)) = (idx, msg.get_mut("result")) {
            if self.calls[i].method == "tools/list" {
                let actor = &self.flow.actor;
                let client = self.flow.session.client();
                hidden = gate.filter_tools(
                    &GateCall {
                        user: &actor.user,
                        agent: &actor.agent,
                        instance: &actor.instance,
                        exe: &actor.exe,
                        client: client.as_deref(),
                        connector: &self.flow.connector.id,
                        method: "tools/list",
                        target: None,
                        arguments: &Value::Null,
                    },
                    result,
                );
                changed |= !hidden.is_empty();
            }
        }
        let masked = gate.mask(msg);
        changed |= !masked.is_empty();
        let Some(i) = idx else {
            if !masked.is_empty() {
                // A notification or server request in the stream: the counts go to the
                // receipt of the call it belongs to (the first still open).
                if let Some(c) = self.calls.iter_mut().find(|c| !c.done) {
                    merge(&mut c.receipt.outcome.masking, &masked);
                }
            }
            return changed;
        };
        let latency = self.started.elapsed().as_micros() as u64;
        let c = &mut self.calls[i];
        c.done = true;
        if !of_interest(&c.method) && msg.get("error").is_none() && masked.is_empty() {
            return changed;
        }
        let r = &mut c.receipt;
        merge(&mut r.outcome.masking, &masked);
        r.outcome.latency_us = latency;
        r.outcome.http_status = Some(200);
        if let Some(err) = msg.get("error") {
            r.outcome.status = "rpc_error".into();
            r.outcome.rpc_error_code = err.get("code").and_then(Value::as_i64);
            r.outcome.error = err
                .get("message")
                .and_then(Value::as_str)
                .map(|s| s.chars().take(500).collect());
        } else if msg.get("result").and_then(|r| r.get("isError")) == Some(&Value::Bool(true)) {
            r.outcome.status = "tool_error".into();
        } else {
            r.outcome.status = "ok".into();
        }
        r.recording = Some(recording(msg, &hidden, sole && !changed));
        c.unrecorded = true;
        changed
    }

    /// Write the receipts of the calls answered since the last time, before what carries
    /// their answers is released: `carrier_bytes` is its size (the JSON body, or the SSE
    /// event), so each receipt's `bytes_out` counts everything released for its exchange up
    /// to and including its answer.
    pub async fn record_answered(
        &mut self,
        carrier_bytes: usize,
    ) -> Result<(), crate::audit::AuditError> {
        let bytes_out = self.bytes_out + carrier_bytes as u64;
        for c in self.calls.iter_mut().filter(|c| c.unrecorded) {
            let stored = self.flow.ctx.record(c.take_answered(bytes_out)).await?;
            // Per call, so debug: the receipt is the record (info stays readable at any rate).
            debug!(
                receipt = %stored.id,
                method = %c.method,
                tool = c.target.as_deref().unwrap_or(""),
                outcome = %stored.outcome.status,
                latency_us = stored.outcome.latency_us,
                masked = stored.outcome.masking.values().sum::<u32>(),
                bytes_out,
                "exchange recorded"
            );
        }
        Ok(())
    }

    /// Calls that never got an answer: the response failed or ended first. Their receipts say
    /// so (status and error), written in the background when the stream is dropped.
    pub fn finish_unanswered(
        &mut self,
        status: &str,
        http_status: Option<u16>,
        error: Option<String>,
    ) -> Vec<Receipt> {
        let latency = self.started.elapsed().as_micros() as u64;
        let mut out = Vec::new();
        for c in self.calls.iter_mut().filter(|c| !c.done) {
            c.done = true;
            if !of_interest(&c.method) && status == "ok" {
                continue;
            }
            let r = &mut c.receipt;
            r.outcome.status = status.into();
            r.outcome.http_status = http_status;
            r.outcome.error = error.clone();
            r.outcome.latency_us = latency;
            r.outcome.bytes_out = self.bytes_out;
            out.push(r.clone());
        }
        out
    }

    pub fn session(&self) -> Arc<super::SessionHandle> {
        self.flow.session.clone()
    }

    /// Ids of the requests still waiting for their answer.
    pub fn open_call_ids(&self) -> Vec<Value> {
        self.calls
            .iter()
            .filter(|c| !c.done && !c.id.is_null())
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn has_open_calls(&self) -> bool {
        self.calls.iter().any(|c| !c.done)
    }

    /// Write receipts for unanswered calls (see `finish_unanswered`).
    pub async fn record_unanswered(
        &mut self,
        status: &str,
        http_status: Option<u16>,
        error: Option<String>,
    ) -> Result<(), crate::audit::AuditError> {
        for r in self.finish_unanswered(status, http_status, error) {
            self.flow.ctx.record(r).await?;
        }
        Ok(())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.has_open_calls() && !self.calls.iter().any(|c| c.unrecorded) {
            return;
        }
        let mut receipts: Vec<Receipt> = self
            .calls
            .iter_mut()
            .filter(|c| c.unrecorded)
            .map(|c| c.take_answered(self.bytes_out))
            .collect();
        receipts.extend(self.finish_unanswered(
            "incomplete",
            None,
            Some("the response ended before this call was answered (stream closed, session terminated or agent gone)".into()),
        ));
        if receipts.is_empty() {
            return;
        }
        let ctx = self.flow.ctx.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for r in receipts {
                    if let Err(e) = ctx.record(r).await {
                        warn!(error = %e, "could not record an unanswered call");
                    }
                }
            });
        }
    }
}

fn merge(into: &mut BTreeMap<String, u32>, from: &BTreeMap<String, u32>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Tool name, resource URI or prompt name.
fn target_of(method: &str, params: &Value) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params.get(key).and_then(Value::as_str).map(String::from)
}

/// clientInfo sent in a stateless-era request's `_meta`.
fn meta_client(params: &Value) -> Option<String> {
    let meta = params.get("_meta")?.as_object()?;
    let info = meta
        .iter()
        .find(|(k, _)| k.ends_with("clientInfo"))
        .map(|(_, v)| v)?;
    let name = info.get("name")?.as_str()?;
    let version = info.get("version").and_then(Value::as_str).unwrap_or("");
    Some(format!("{name} {version}").trim().to_string())
}

/// Whether `v` surely serializes to at most `limit` bytes: an upper bound on its compact JSON
/// size (a byte JSON escapes counted as 6, numbers as 24), walked without allocating.
fn json_len_at_most(v: &Value, limit: usize) -> bool {
    fn size(v: &Value, budget: &mut isize) {
        if *budget < 0 {
            return;
        }
        match v {
            Value::Null | Value::Bool(_) => *budget -= 5,
            Value::Number(_) => *budget -= 24,
            Value::String(s) => *budget -= string_bound(s),
            Value::Array(items) => {
                *budget -= 2 + items.len() as isize;
                for i in items {
                    size(i, budget);
                }
            }
            Value::Object(map) => {
                *budget -= 2 + map.len() as isize * 2;
                for (k, v) in map {
                    *budget -= string_bound(k);
                    size(v, budget);
                }
            }
        }
    }
    fn string_bound(s: &str) -> isize {
        let escaped = s
            .bytes()
            .filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
            .count();
        (s.len() + escaped * 5 + 2) as isize
    }
    let mut budget = limit as isize;
    size(v, &mut budget);
    budget >= 0
}

/// What the session replay shows of a response: already masked; large ones truncated.
/// `take`: the message is not needed again, so its result (or error) is moved, not copied.
fn recording(msg: &mut Value, hidden: &[String], take: bool) -> Value {
    let body = if take {
        msg.as_object_mut()
            .and_then(|m| m.swap_remove("result").or_else(|| m.swap_remove("error")))
    } else {
        msg.get("result").or_else(|| msg.get("error")).cloned()
    }
    .unwrap_or(Value::Null);
    // Most results are far below the limit: sized without serializing them.
    let mut rec = serde_json::Map::new();
    if json_len_at_most(&body, RECORDING_MAX) {
        // Moved in (`json!` would copy the tree once more).
        rec.insert("response".into(), body);
    } else {
        let text = serde_json::to_string(&body).unwrap_or_default();
        let cut: String = text.chars().take(RECORDING_MAX).collect();
        rec.insert("truncated".into(), Value::Bool(true));
        rec.insert("bytes".into(), text.len().into());
        rec.insert("preview".into(), cut.into());
    }
    if !hidden.is_empty() {
        rec.insert("hidden_tools".into(), json!(hidden));
    }
    Value::Object(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_digest_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"x": "s", "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        // The digest of the canonical text itself.
        let canonical = r#"{"a":{"x":"s","y":[1,2]},"b":1}"#;
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(canonical)));
        assert_eq!(digest(&a), expected);
        assert_ne!(digest(&a), digest(&json!({"a": 1})));
    }

    #[test]
    fn the_size_bound_never_undercounts() {
        let cases = [
            json!(null),
            json!({"content": [{"type": "text", "text": "hello \"world\"\n\u{1}"}], "isError": false}),
            json!({"n": [1, -2, 3.25, 1e300, u64::MAX], "é": "ünïcode", "nested": {"a": [[], {}]}}),
            json!("x".repeat(100)),
        ];
        for v in cases {
            let real = serde_json::to_string(&v).unwrap().len();
            assert!(json_len_at_most(&v, real + 1_000_000));
            // Any limit the bound accepts really holds.
            for limit in 0..real + 200 {
                if json_len_at_most(&v, limit) {
                    assert!(real <= limit, "{v}: {real} > {limit}");
                }
            }
        }
        let big = json!({"text": "y".repeat(RECORDING_MAX)});
        assert!(!json_len_at_most(&big, RECORDING_MAX));
        let mut msg = json!({"id": 1, "result": big});
        assert!(recording(&mut msg, &[], false)["truncated"] == json!(true));
    }

    #[test]
    fn a_recording_copies_or_takes_the_result() {
        let mut msg = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"text": "hi"}]}});
        let copied = recording(&mut msg, &["hidden".into()], false);
        assert_eq!(copied["response"], msg["result"]);
        assert_eq!(copied["hidden_tools"], json!(["hidden"]));
        let taken = recording(&mut msg, &[], true);
        assert_eq!(taken["response"], json!({"content": [{"text": "hi"}]}));
        assert!(msg.get("result").is_none(), "moved out: {msg}");
        let mut err = json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "no"}});
        assert_eq!(recording(&mut err, &[], true)["response"]["message"], "no");
    }
}
