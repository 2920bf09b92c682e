//! What one receipt says: the evidence an admin reads in the incident drill. Plain data; the
//! store (chain, indexes) and the proxy (which fills it in) live elsewhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub recording: Option<Value>,
}

impl Receipt {
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    #[default]
    Exchange,
    Connection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// JSON-RPC id (null for notifications).
    pub jsonrpc_id: Value,
    /// JSON-RPC method, e.g. "tools/call".
    pub method: String,
    /// Tool name (tools/call), resource URI (resources/read) or prompt name (prompts/get).
    pub target: Option<String>,
    /// "sha256:<hex>" of the arguments as the agent sent them (canonical JSON).
    pub arguments_digest: Option<String>,
    /// Arguments with detected secrets and personal data replaced.
    pub arguments_redacted: Option<Value>,
    /// "session" or "stateless".
    pub era: Option<String>,
    pub protocol_version: Option<String>,
    pub http_method: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorChain {
    pub user: String,
    pub uid: u32,
    pub agent: String,
    pub instance: String,
    /// cgroup inode of the instance.
    pub instance_id: u64,
    pub pid: u32,
    pub surface: Surface,
}

/// The client surface: what program, and what MCP client inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    /// Executable of the connecting process (kernel-derived).
    pub exe: String,
    /// MCP clientInfo "name version" when the client sent it (client's word).
    pub client: Option<String>,
    /// HTTP User-Agent (client's word).
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// Enforcer session (agent instance x connector).
    pub enforcer_session: String,
    /// Client flow (agent <-> proxy connection) id.
    pub client_flow: String,
    /// Backend flow (proxy <-> upstream connection) id, when one was used.
    pub backend_flow: Option<String>,
    /// MCP session id (session era), as the server issued it.
    pub protocol_session_id: Option<String>,
    /// "active", "idle", "closed", "terminated".
    pub state: String,
    pub idle_limit_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyTicket {
    /// Policy version id ("v3"), or "none" when no policy is loaded.
    pub version: String,
    /// Content hash of that version ("sha256:<hex>").
    pub version_hash: String,
    /// Host environment label from the config.
    pub environment: String,
    /// Enforced decision: "allow", "deny", "require_approval".
    pub decision: String,
    /// Matched rule id (`@id`), or None when the default applied.
    pub rule: Option<String>,
    pub reason_code: String,
    pub note: Option<String>,
    /// Shadow mode: what the policy would have decided had it been enforced.
    pub shadow_decision: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRef {
    /// "inject", "passthrough", "mtls", "none", or "withheld" (the call was refused before
    /// the bound credential was injected).
    pub mode: String,
    /// "binding-id@version"; never the secret.
    pub binding: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorPath {
    pub connector: String,
    pub route: String,
    pub backend: String,
    pub route_status: RouteStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// "reachable", "unreachable", "unknown".
    pub state: String,
    pub last_error: Option<String>,
    pub last_latency_us: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// "ok", "tool_error", "rpc_error", "denied", "approval_required", "dlp_blocked",
    /// "refused", "upstream_error", "killed".
    pub status: String,
    pub http_status: Option<u16>,
    /// JSON-RPC error code, when the agent got an error.
    pub rpc_error_code: Option<i64>,
    pub error: Option<String>,
    pub latency_us: u64,
    /// Request bytes from the agent and response bytes to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Matches per detector, redacted or blocked (counts only, never the text).
    pub masking: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    /// "unknown_destination", "tls_failure", "revocation_kill", "session_terminated".
    pub event: String,
    /// Original destination "addr:port" and SNI, when known.
    pub destination: Option<String>,
    pub sni: Option<String>,
    pub detail: Option<String>,
}
