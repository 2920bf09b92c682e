//! What one receipt says: the evidence an admin reads in the incident drill. Plain data; the
//! store (chain, indexes) and the proxy (which fills it in) live elsewhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::canonical::CanonicalJson;
use super::compact;

pub use crate::text::Text;

/// Free-form JSON serialized with object keys sorted (canonical), whatever order the map
/// keeps them in (`serde_json`'s `preserve_order` is on in this build).
mod canonical {
    use serde::ser::{SerializeMap as _, SerializeSeq as _};
    use serde::{Serialize, Serializer};
    use serde_json::Value;

    pub struct Sorted<'a>(pub &'a Value);

    impl Serialize for Sorted<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    let mut m = s.serialize_map(Some(keys.len()))?;
                    for k in keys {
                        m.serialize_entry(k, &Sorted(&map[k.as_str()]))?;
                    }
                    m.end()
                }
                Value::Array(items) => {
                    let mut q = s.serialize_seq(Some(items.len()))?;
                    for item in items {
                        q.serialize_element(&Sorted(item))?;
                    }
                    q.end()
                }
                scalar => scalar.serialize(s),
            }
        }
    }

    pub fn value<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        Sorted(v).serialize(s)
    }
}

/// One MCP exchange of interest, or one connection-level event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Assigned by the store on append ("R" + 12-digit sequence); empty before.
    #[serde(default)]
    pub id: String,
    /// Position in the chain, assigned by the store on append.
    #[serde(default)]
    pub seq: u64,
    /// When the exchange started (Unix nanoseconds; RFC 3339 in `time`).
    pub time_ns: u64,
    pub time: String,
    pub kind: ReceiptKind,
    /// Absent for connection events that carried no request.
    pub request: Option<RequestInfo>,
    pub actor: ActorChain,
    pub session: SessionRef,
    /// Absent when no policy ran (connection events, malformed requests).
    pub policy: Option<PolicyTicket>,
    pub credential: CredentialRef,
    pub connector: ConnectorPath,
    pub outcome: Outcome,
    /// Connection-level event detail (kind = connection).
    pub event: Option<ConnectionEvent>,
    /// Redacted response (or its first bytes) for session replay; never unredacted content.
    pub recording: Option<CanonicalJson>,
}

impl Receipt {
    /// The receipt as canonical JSON (keys sorted at every level, no whitespace) with its
    /// `id` and `seq` left as `""` and `0`, and where those two values sit in the bytes.
    /// Written field by field: no intermediate `serde_json::Value` (the nested structs
    /// declare their fields in sorted order; free-form JSON is sorted as it is written).
    /// Equal to the generic path's bytes (tested), so hashes never depend on which ran.
    #[allow(clippy::type_complexity)]
    pub fn canonical_with_slots(
        &self,
    ) -> Result<(Vec<u8>, (usize, usize), (usize, usize)), serde_json::Error> {
        fn key(out: &mut Vec<u8>, name: &str, first: bool) {
            if !first {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        }
        let mut out = Vec::with_capacity(2048);
        out.push(b'{');
        key(&mut out, "actor", true);
        compact::to_vec(&mut out, &self.actor)?;
        key(&mut out, "connector", false);
        compact::to_vec(&mut out, &self.connector)?;
        key(&mut out, "credential", false);
        compact::to_vec(&mut out, &self.credential)?;
        key(&mut out, "event", false);
        compact::to_vec(&mut out, &self.event)?;
        key(&mut out, "id", false);
        let id = (out.len(), out.len() + 2);
        out.extend_from_slice(b"\"\"");
        key(&mut out, "kind", false);
        compact::to_vec(&mut out, &self.kind)?;
        key(&mut out, "outcome", false);
        compact::to_vec(&mut out, &self.outcome)?;
        key(&mut out, "policy", false);
        compact::to_vec(&mut out, &self.policy)?;
        key(&mut out, "recording", false);
        raw(&mut out, self.recording.as_ref());
        key(&mut out, "request", false);
        match &self.request {
            Some(q) => q.write_canonical(&mut out)?,
            None => out.extend_from_slice(b"null"),
        }
        key(&mut out, "seq", false);
        let seq = (out.len(), out.len() + 1);
        out.push(b'0');
        key(&mut out, "session", false);
        compact::to_vec(&mut out, &self.session)?;
        key(&mut out, "time", false);
        compact::to_vec(&mut out, &self.time)?;
        key(&mut out, "time_ns", false);
        compact::to_vec(&mut out, &self.time_ns)?;
        out.push(b'}');
        Ok((out, id, seq))
    }

    /// A receipt of `kind` stamped now (Unix nanoseconds and RFC 3339).
    pub fn stamped(kind: ReceiptKind) -> Self {
        let now = std::time::SystemTime::now();
        Receipt {
            time_ns: now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64,
            time: humantime::format_rfc3339_micros(now).to_string(),
            kind,
            ..Default::default()
        }
    }
}

/// Canonical JSON text as it is (`null` for none).
fn raw(out: &mut Vec<u8>, json: Option<&CanonicalJson>) {
    match json {
        Some(j) => out.extend_from_slice(j.as_str().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

impl RequestInfo {
    /// Canonical JSON, its stored arguments copied as they are (they are canonical already).
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"{\"arguments_digest\":");
        compact::to_vec(out, &self.arguments_digest)?;
        out.extend_from_slice(b",\"arguments_redacted\":");
        raw(out, self.arguments_redacted.as_ref());
        out.extend_from_slice(b",\"era\":");
        compact::to_vec(out, &self.era)?;
        out.extend_from_slice(b",\"http_method\":");
        compact::to_vec(out, &self.http_method)?;
        out.extend_from_slice(b",\"jsonrpc_id\":");
        compact::to_vec(out, &canonical::Sorted(&self.jsonrpc_id))?;
        out.extend_from_slice(b",\"method\":");
        compact::to_vec(out, &self.method)?;
        out.extend_from_slice(b",\"protocol_version\":");
        compact::to_vec(out, &self.protocol_version)?;
        out.extend_from_slice(b",\"target\":");
        compact::to_vec(out, &self.target)?;
        out.push(b'}');
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    #[default]
    Exchange,
    Connection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// "sha256:<hex>" of the arguments as the agent sent them (canonical JSON).
    pub arguments_digest: Option<Text>,
    /// Arguments with detected secrets and personal data replaced.
    pub arguments_redacted: Option<CanonicalJson>,
    /// "session" or "stateless".
    pub era: Option<Text>,
    pub http_method: Text,
    /// JSON-RPC id (null for notifications).
    #[serde(serialize_with = "canonical::value")]
    pub jsonrpc_id: Value,
    /// JSON-RPC method, e.g. "tools/call".
    pub method: Text,
    pub protocol_version: Option<Text>,
    /// Tool name (tools/call), resource URI (resources/read) or prompt name (prompts/get).
    pub target: Option<Text>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorChain {
    pub agent: Text,
    pub instance: Text,
    /// cgroup inode of the instance.
    pub instance_id: u64,
    pub pid: u32,
    pub surface: Surface,
    pub uid: u32,
    pub user: Text,
}

/// The client surface: what program, and what MCP client inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    /// MCP clientInfo "name version" when the client sent it (client's word).
    pub client: Option<Text>,
    /// Executable of the connecting process (kernel-derived).
    pub exe: Text,
    /// HTTP User-Agent (client's word).
    pub user_agent: Option<Text>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// Backend flow (proxy <-> upstream connection) id, when one was used.
    pub backend_flow: Option<Text>,
    /// Client flow (agent <-> proxy connection) id.
    pub client_flow: Text,
    /// Enforcer session (agent instance x connector).
    pub enforcer_session: Text,
    pub idle_limit_ms: u64,
    /// MCP session id (session era), as the server issued it.
    pub protocol_session_id: Option<Text>,
    /// "active", "idle", "closed", "terminated".
    pub state: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyTicket {
    /// Enforced decision: "allow", "deny", "require_approval".
    pub decision: Text,
    /// Host environment label from the config.
    pub environment: Text,
    pub note: Option<Text>,
    pub reason_code: Text,
    /// Matched rule id (`@id`), or None when the default applied.
    pub rule: Option<Text>,
    /// Shadow mode: what the policy would have decided had it been enforced.
    pub shadow_decision: Option<Text>,
    /// Policy version id ("v3"), or "none" when no policy is loaded.
    pub version: Text,
    /// Content hash of that version ("sha256:<hex>").
    pub version_hash: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRef {
    /// "binding-id@version"; never the secret.
    pub binding: Option<Text>,
    /// "inject", "passthrough", "mtls", "none", or "withheld" (the call was refused before
    /// the bound credential was injected).
    pub mode: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorPath {
    pub backend: Text,
    pub connector: Text,
    pub route: Text,
    pub route_status: RouteStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub last_error: Option<Text>,
    pub last_latency_us: Option<u64>,
    /// "reachable", "unreachable", "unknown".
    pub state: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Request bytes from the agent and response bytes to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<Text>,
    pub http_status: Option<u16>,
    pub latency_us: u64,
    /// Matches per detector, redacted or blocked (counts only, never the text).
    pub masking: BTreeMap<String, u32>,
    /// JSON-RPC error code, when the agent got an error.
    pub rpc_error_code: Option<i64>,
    /// "ok", "tool_error", "rpc_error", "denied", "approval_required", "dlp_blocked",
    /// "refused", "upstream_error", "killed".
    pub status: Text,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    /// Original destination "addr:port" and SNI, when known.
    pub destination: Option<Text>,
    pub detail: Option<Text>,
    /// "unknown_destination", "tls_failure", "revocation_kill", "session_terminated".
    pub event: Text,
    pub sni: Option<Text>,
}
