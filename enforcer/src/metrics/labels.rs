//! Label values the proxy may pass, and the label sets of each metric family.
//!
//! Everything here is either a closed enum or an interned `Arc<str>` that went through a
//! [`BoundedLabels`](super::bounded::BoundedLabels) cap, so no caller can put session ids,
//! arguments or other free text into a series name.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;

/// Label value for everything past a cardinality cap (and for empty or over-long names).
pub(crate) const OVERFLOW: &str = "_other";

/// How a call ended, from the proxy's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded and answered without error.
    Allowed,
    /// Refused by policy (give the reason code).
    Denied,
    /// Forwarded; the server answered with `isError: true` or a JSON-RPC error.
    ToolError,
    /// Forwarded, but the upstream connect, TLS handshake or HTTP exchange failed.
    TransportError,
    /// Refused because a DLP detector with the `block` action matched the arguments.
    DlpBlocked,
    /// Held for a human approval instead of being forwarded.
    ApprovalRequired,
}

impl Outcome {
    /// In declaration order, so `outcome as usize` indexes it.
    pub const ALL: [Outcome; 6] = [
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::ToolError,
        Outcome::TransportError,
        Outcome::DlpBlocked,
        Outcome::ApprovalRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::ToolError => "tool_error",
            Outcome::TransportError => "transport_error",
            Outcome::DlpBlocked => "dlp_blocked",
            Outcome::ApprovalRequired => "approval_required",
        }
    }

    /// Only calls that went upstream feed the latency histogram: a denial's microseconds
    /// would drag a tool's percentiles towards zero.
    pub(crate) fn reached_upstream(self) -> bool {
        matches!(
            self,
            Outcome::Allowed | Outcome::ToolError | Outcome::TransportError
        )
    }
}

/// What a DLP detector did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpAction {
    /// Matches were masked and the message went on.
    Redacted,
    /// The message was refused.
    Blocked,
}

/// What a revocation applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationScope {
    Agent,
    Instance,
    User,
    Binding,
    Connector,
    Session,
}

impl RevocationScope {
    pub const ALL: [RevocationScope; 6] = [
        RevocationScope::Agent,
        RevocationScope::Instance,
        RevocationScope::User,
        RevocationScope::Binding,
        RevocationScope::Connector,
        RevocationScope::Session,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationScope::Agent => "agent",
            RevocationScope::Instance => "instance",
            RevocationScope::User => "user",
            RevocationScope::Binding => "binding",
            RevocationScope::Connector => "connector",
            RevocationScope::Session => "session",
        }
    }
}

/// JSON-RPC methods of MCP (2025-06-18, plus `server/discover` and `tasks/*` of later
/// revisions). The method label is one of these or [`OVERFLOW`]: a client can send any
/// method string, so it is never used as is. Most frequent first, since [`method_label`]
/// scans linearly. At most 63 entries: a tool's seen methods are a bit mask in a `u64`
/// (the last bit is `_other`).
const KNOWN_METHODS: &[&str] = &[
    "tools/call",
    "tools/list",
    "resources/read",
    "prompts/get",
    "initialize",
    "ping",
    "server/discover",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/roots/list_changed",
];

/// Bit index of the method label `_other` in a method mask.
const OTHER_METHOD_BIT: usize = 63;

/// The bounded label for a JSON-RPC method, and its bit in a method mask.
pub(crate) fn method_label(method: &str) -> (&'static str, usize) {
    match KNOWN_METHODS.iter().position(|m| *m == method) {
        Some(i) => (KNOWN_METHODS[i], i),
        None => (OVERFLOW, OTHER_METHOD_BIT),
    }
}

/// The method labels whose bits are set in `mask`.
pub(crate) fn methods_in(mask: u64) -> impl Iterator<Item = &'static str> {
    KNOWN_METHODS
        .iter()
        .copied()
        .enumerate()
        .chain(std::iter::once((OTHER_METHOD_BIT, OVERFLOW)))
        .filter(move |(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, m)| m)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ToolLabels {
    pub connector: Arc<str>,
    pub tool: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub connector: Arc<str>,
    pub tool: Arc<str>,
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub connector: Arc<str>,
    pub tool: Arc<str>,
    /// "tool" or "transport".
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DenialLabels {
    pub connector: Arc<str>,
    pub tool: Arc<str>,
    pub reason: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DetectorLabels {
    pub detector: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ScopeLabels {
    pub scope: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct VersionLabels {
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_collapse_to_other() {
        assert_eq!(method_label("tools/call"), ("tools/call", 0));
        assert_eq!(method_label("x/../session-1234").0, OVERFLOW);
        assert!(KNOWN_METHODS.len() < OTHER_METHOD_BIT);
    }

    #[test]
    fn method_mask_round_trips() {
        let mask = (1 << method_label("ping").1) | (1 << method_label("nope").1);
        assert_eq!(methods_in(mask).collect::<Vec<_>>(), ["ping", OVERFLOW]);
    }
}
