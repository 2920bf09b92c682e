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
            CanonicalJson, ConnectorPath, CredentialRef, Outcome, Receipt, ReceiptKind,
            RequestInfo, RouteStatus, SessionRef, Text,
        },
    },
    credentials::{BindingRef, CredentialMode},
    gate::{Call as GateCall, Enforced, Verdict},
    jsonview::Node,
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
    /// Boxed: 1.3 KB that moves through the futures recording it. Taken when written.
    receipt: Option<Box<Receipt>>,
    done: bool,
    /// Answered by the server, its receipt filled in but not written yet: written by
    /// [`Exchange::record_answered`] once the size of what carries the answer is known.
    unrecorded: bool,
}

impl PendingCall {
    /// The filled-in receipt of an answered call, to be written now, with the bytes released
    /// for its exchange.
    fn take_answered(&mut self, bytes_out: u64) -> Option<Box<Receipt>> {
        self.unrecorded = false;
        let mut r = self.receipt.take()?;
        r.outcome.bytes_out = bytes_out;
        Some(r)
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
pub fn digest(v: &Value) -> Text {
    digest_of_canonical(&canonical::canonical_json(v))
}

fn digest_of_canonical(bytes: &[u8]) -> Text {
    let mut out = [0u8; 7 + 64];
    out[..7].copy_from_slice(b"sha256:");
    hex::encode_to_slice(Sha256::digest(bytes), &mut out[7..]).expect("64 hex digits");
    Text::from(std::str::from_utf8(&out).expect("ASCII"))
}

/// The receipt's method: MCP's own methods as shared words.
fn method_text(method: &str) -> Text {
    match method {
        "initialize" => Text::word("initialize"),
        "tools/list" => Text::word("tools/list"),
        "tools/call" => Text::word("tools/call"),
        "resources/read" => Text::word("resources/read"),
        "prompts/get" => Text::word("prompts/get"),
        other => other.into(),
    }
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
        let header = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(Text::from);
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
            let arguments_digest = match &verdict.redacted_arguments {
                // Nothing found, nothing redacted: the stored arguments are the agent's, in
                // canonical form already.
                Some(stored) if verdict.findings.is_empty() => {
                    Some(digest_of_canonical(stored.as_str().as_bytes()))
                }
                _ => (!arguments.is_null()).then(|| digest(arguments)),
            };
            if let Some(forward) = verdict.forward_arguments {
                if let Some(p) = params.as_object_mut() {
                    p.insert("arguments".into(), forward);
                    rewritten = true;
                }
            }
            let status = flow.connector.status();
            let receipt = Box::new(Receipt {
                request: Some(RequestInfo {
                    jsonrpc_id: id.clone(),
                    method: method_text(method),
                    target: target.as_deref().map(Text::from),
                    arguments_digest,
                    arguments_redacted: verdict.redacted_arguments,
                    era: Some(Text::word(match era {
                        mcp::Era::Session => "session",
                        mcp::Era::Stateless => "stateless",
                    })),
                    protocol_version: protocol_version.clone(),
                    http_method: match http_method {
                        "POST" => Text::word("POST"),
                        "GET" => Text::word("GET"),
                        other => other.into(),
                    },
                }),
                actor: {
                    let mut chain = flow.texts.actor.clone();
                    chain.surface.client = client.map(Into::into);
                    chain.surface.user_agent = user_agent.clone();
                    chain
                },
                session: SessionRef {
                    enforcer_session: flow.texts.session.clone(),
                    client_flow: flow.texts.client_flow.clone(),
                    backend_flow: None,
                    protocol_session_id: protocol_session.clone(),
                    state: Text::word(flow.session.state_name()),
                    idle_limit_ms: flow.session.idle_limit.as_millis() as u64,
                },
                policy: Some(verdict.ticket),
                credential: CredentialRef {
                    mode: Text::word("none"),
                    binding: None,
                },
                connector: ConnectorPath {
                    connector: flow.texts.connector.clone(),
                    route: flow.texts.route.clone(),
                    backend: flow.texts.backend.clone(),
                    route_status: RouteStatus {
                        state: Text::word(match status.reachable {
                            Some(true) => "reachable",
                            Some(false) => "unreachable",
                            None => "unknown",
                        }),
                        last_error: status.last_error.map(Into::into),
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
            });
            calls.push(PendingCall {
                id: id.clone(),
                method: method.clone(),
                target,
                enforced: verdict.enforced,
                receipt: Some(receipt),
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
        let credential = CredentialRef {
            mode: Text::word(mode),
            binding: binding.map(|b| b.to_string().into()),
        };
        for r in self
            .calls
            .iter_mut()
            .filter_map(|c| c.receipt.as_deref_mut())
        {
            r.credential = credential.clone();
        }
    }

    /// The call was refused before injection: the receipt names the binding that would have
    /// been used, with mode "withheld".
    pub fn set_credential_withheld(&mut self, binding: &BindingRef) {
        let credential = CredentialRef {
            mode: Text::word("withheld"),
            binding: Some(binding.to_string().into()),
        };
        for r in self
            .calls
            .iter_mut()
            .filter_map(|c| c.receipt.as_deref_mut())
        {
            r.credential = credential.clone();
        }
    }

    pub fn set_backend_flow(&mut self, flow: Option<&Text>, protocol_session: Option<&str>) {
        let protocol_session = protocol_session.map(Text::from);
        for r in self
            .calls
            .iter_mut()
            .filter_map(|c| c.receipt.as_deref_mut())
        {
            r.session.backend_flow = flow.cloned();
            if r.session.protocol_session_id.is_none() {
                r.session.protocol_session_id = protocol_session.clone();
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
                let ticket = c.receipt.as_ref().and_then(|r| r.policy.as_ref());
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
            c.done = true;
            let Some(mut r) = c.receipt.take() else {
                continue;
            };
            r.outcome.status = Text::word(status);
            r.outcome.rpc_error_code = Some(code);
            r.outcome.error = Some(message.as_str().into());
            r.outcome.http_status = Some(200);
            r.outcome.latency_us = self.started.elapsed().as_micros() as u64;
            let stored = self.flow.ctx.record(r).await?;
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
    pub fn on_server_message(&mut self, msg: &mut Value) -> bool {
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
                if let Some(r) = self
                    .calls
                    .iter_mut()
                    .find(|c| !c.done)
                    .and_then(|c| c.receipt.as_deref_mut())
                {
                    merge(&mut r.outcome.masking, &masked);
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
        let Some(r) = c.receipt.as_deref_mut() else {
            return changed;
        };
        merge(&mut r.outcome.masking, &masked);
        r.outcome.latency_us = latency;
        r.outcome.http_status = Some(200);
        let tool_error =
            msg.get("result").and_then(|r| r.get("isError")) == Some(&Value::Bool(true));
        set_status(r, msg.get("error"), tool_error);
        let body = msg
            .get("result")
            .or_else(|| msg.get("error"))
            .unwrap_or(&Value::Null);
        r.recording = recording(&canonical::canonical_json(body), &hidden);
        c.unrecorded = true;
        changed
    }

    /// [`on_server_message`](Self::on_server_message) for the common case, judged from the
    /// message's text without building its tree: one answer to an open call that is not a
    /// tools/list (those are filtered), that no detector would mask, and whose recording
    /// needs no truncation. It then goes out as it came. `None`: nothing was done, and the
    /// message takes the full path.
    pub fn on_server_text(&mut self, text: &str) -> Option<()> {
        // One parse: the view serves the match, the detectors and the recording.
        let doc = crate::jsonview::parse(text).ok()?;
        let (i, error, tool_error) = {
            let reply = jsonrpc::Reply::of(&doc)?;
            let i = self
                .calls
                .iter()
                .position(|c| !c.done && c.id == reply.id)?;
            let c = &self.calls[i];
            if c.method == "tools/list" || c.receipt.is_none() {
                return None;
            }
            if !self.flow.ctx.gate.dlp().results_clean(&doc) {
                return None;
            }
            (i, reply.error.map(Node::to_value), reply.is_tool_error())
        };
        let of_interest = of_interest(&self.calls[i].method) || error.is_some();
        let recorded = if of_interest {
            // The result (or error) itself, out of the message, written canonical.
            let Node::Object(mut members) = doc else {
                return None;
            };
            let at = members
                .iter()
                .rposition(|(k, _)| k == "result" || k == "error")?;
            let mut canon = Vec::with_capacity(text.len());
            members.swap_remove(at).1.write_canonical(&mut canon);
            if canon.len() > RECORDING_MAX {
                return None;
            }
            recording(&canon, &[])
        } else {
            None
        };
        let latency = self.started.elapsed().as_micros() as u64;
        let c = &mut self.calls[i];
        c.done = true;
        if !of_interest {
            return Some(());
        }
        let r = c.receipt.as_deref_mut()?;
        r.outcome.latency_us = latency;
        r.outcome.http_status = Some(200);
        set_status(r, error.as_ref(), tool_error);
        r.recording = recorded;
        c.unrecorded = true;
        Some(())
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
            let Some(r) = c.take_answered(bytes_out) else {
                continue;
            };
            let stored = self.flow.ctx.record(r).await?;
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
    // The receipts are boxed already (taken from their calls) and go on to be recorded boxed.
    #[allow(clippy::vec_box)]
    pub fn finish_unanswered(
        &mut self,
        status: &str,
        http_status: Option<u16>,
        error: Option<String>,
    ) -> Vec<Box<Receipt>> {
        let latency = self.started.elapsed().as_micros() as u64;
        let mut out = Vec::new();
        for c in self.calls.iter_mut().filter(|c| !c.done) {
            c.done = true;
            if !of_interest(&c.method) && status == "ok" {
                continue;
            }
            let Some(mut r) = c.receipt.take() else {
                continue;
            };
            r.outcome.status = status.into();
            r.outcome.http_status = http_status;
            r.outcome.error = error.as_deref().map(Into::into);
            r.outcome.latency_us = latency;
            r.outcome.bytes_out = self.bytes_out;
            out.push(r);
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
        let mut receipts: Vec<Box<Receipt>> = self
            .calls
            .iter_mut()
            .filter(|c| c.unrecorded)
            .filter_map(|c| c.take_answered(self.bytes_out))
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

/// An answered call's outcome: its JSON-RPC error, else whether the tool failed.
fn set_status(r: &mut Receipt, error: Option<&Value>, tool_error: bool) {
    if let Some(err) = error {
        r.outcome.status = Text::word("rpc_error");
        r.outcome.rpc_error_code = err.get("code").and_then(Value::as_i64);
        r.outcome.error = err
            .get("message")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect::<String>().into());
    } else if tool_error {
        r.outcome.status = Text::word("tool_error");
    } else {
        r.outcome.status = Text::word("ok");
    }
}

/// What the session replay shows of a response (`body`: its result or error, masked, as
/// canonical JSON): `{"response": ...}`, or for one over [`RECORDING_MAX`] its size and a
/// preview of its first characters; with the tools a tools/list result hid. Assembled as
/// canonical JSON (members in key order), without a tree.
fn recording(body: &[u8], hidden: &[String]) -> Option<CanonicalJson> {
    let mut out = Vec::with_capacity(body.len() + 32);
    out.push(b'{');
    let truncated = body.len() > RECORDING_MAX;
    if truncated {
        let text = String::from_utf8_lossy(body);
        let cut: String = text.chars().take(RECORDING_MAX).collect();
        out.extend_from_slice(format!("\"bytes\":{},", body.len()).as_bytes());
        if !hidden.is_empty() {
            out.extend_from_slice(b"\"hidden_tools\":");
            serde_json::to_writer(&mut out, hidden).ok()?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"preview\":");
        serde_json::to_writer(&mut out, &cut).ok()?;
        out.extend_from_slice(b",\"truncated\":true}");
    } else {
        if !hidden.is_empty() {
            out.extend_from_slice(b"\"hidden_tools\":");
            serde_json::to_writer(&mut out, hidden).ok()?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"response\":");
        out.extend_from_slice(body);
        out.push(b'}');
    }
    CanonicalJson::from_canonical_bytes(out).ok()
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
    fn a_recording_is_canonical_and_large_ones_are_previewed() {
        let body = canonical::canonical_json(&json!({"content": [{"text": "hi", "type": "t"}]}));
        let rec = recording(&body, &[]).unwrap();
        assert_eq!(
            rec.as_str(),
            r#"{"response":{"content":[{"text":"hi","type":"t"}]}}"#
        );
        let rec = recording(&body, &["b".into(), "a".into()]).unwrap();
        assert_eq!(
            rec.to_value(),
            json!({"hidden_tools": ["b", "a"], "response": {"content": [{"text": "hi", "type": "t"}]}})
        );
        assert_eq!(rec, CanonicalJson::from_value(&rec.to_value()));
        let big = canonical::canonical_json(&json!({"text": "y".repeat(RECORDING_MAX)}));
        for hidden in [vec![], vec!["x".to_string()]] {
            let rec = recording(&big, &hidden).unwrap();
            let v = rec.to_value();
            assert_eq!(v["truncated"], json!(true));
            assert_eq!(v["bytes"], json!(big.len()));
            assert_eq!(v["preview"].as_str().unwrap().len(), RECORDING_MAX);
            assert_eq!(rec, CanonicalJson::from_value(&v), "canonical");
        }
    }
}
