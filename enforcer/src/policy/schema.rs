//! The Cedar schema of MCP Enforcer requests and the list of MCP methods.
//!
//! `context.arguments` is declared as an *open* record (`additionalAttributes`),
//! which Cedar only accepts with the `partial-validate` feature and
//! `ValidationMode::Partial`: accessing an undeclared attribute of an open
//! record then types as `Never` instead of failing, while everything else
//! (entity attributes, `context.dlp.<detector>`, `context.time.*`, action /
//! entity-type pairs) is still type-checked.

use cedar_policy::Schema;
use serde_json::{json, Map, Value};

/// Methods defined by the MCP specification (plus the enforcer's
/// `server/discover`). Policies naming another method get a warning.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
];

/// Default DLP detector names (the daemon should pass its own list).
pub const DEFAULT_DETECTORS: &[&str] = &[
    "aws_access_key",
    "private_key",
    "github_token",
    "jwt",
    "credit_card",
    "email",
];

/// What the resource of a request is for a given method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Tool,
    Resource,
    Prompt,
    Connector,
}

impl ResourceKind {
    pub fn for_method(method: &str) -> Self {
        match method {
            "tools/call" => ResourceKind::Tool,
            "resources/read" => ResourceKind::Resource,
            "prompts/get" => ResourceKind::Prompt,
            _ => ResourceKind::Connector,
        }
    }
    pub fn type_name(self) -> &'static str {
        match self {
            ResourceKind::Tool => "Tool",
            ResourceKind::Resource => "Resource",
            ResourceKind::Prompt => "Prompt",
            ResourceKind::Connector => "Connector",
        }
    }
    /// The attribute holding the target (`name` / `uri`), if any.
    pub fn target_attr(self) -> Option<&'static str> {
        match self {
            ResourceKind::Tool | ResourceKind::Prompt => Some("name"),
            ResourceKind::Resource => Some("uri"),
            ResourceKind::Connector => None,
        }
    }
}

/// A plausible JSON-RPC method name: `segment(/segment)*`, segments of
/// letters, digits, `_`, `-`, `.`, starting with a letter.
pub fn plausible_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 128
        && m.split('/').all(|seg| {
            seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
}

/// The closest known method (edit distance <= 3), for hints.
pub fn closest_method(m: &str) -> Option<&'static str> {
    KNOWN_METHODS
        .iter()
        .map(|k| (levenshtein(m, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn string() -> Value {
    json!({"type": "String"})
}
fn long() -> Value {
    json!({"type": "Long"})
}

fn context_type(detectors: &[String]) -> Value {
    let dlp: Map<String, Value> = detectors.iter().map(|d| (d.clone(), long())).collect();
    json!({
        "type": "Record",
        "attributes": {
            "environment": string(),
            "connector": string(),
            "surface": {"type": "Record", "attributes": {"exe": string(), "client": string()}},
            "arguments": {"type": "Record", "attributes": {}, "additionalAttributes": true},
            "dlp": {"type": "Record", "attributes": dlp},
            "time": {"type": "Record", "attributes": {
                "hour": long(), "minute": long(), "weekday": string(), "unix": long()
            }}
        }
    })
}

/// Build the schema for the given methods and detector names.
pub fn build_schema(methods: &[String], detectors: &[String]) -> Result<Schema, String> {
    let named = |attr: &str| {
        json!({"memberOfTypes": ["Connector"], "shape": {"type": "Record", "attributes": {
            attr: string(), "connector": string()
        }}})
    };
    let ctx = context_type(detectors);
    let actions: Map<String, Value> = methods
        .iter()
        .map(|m| {
            let res = ResourceKind::for_method(m).type_name();
            (
                m.clone(),
                json!({"appliesTo": {
                    "principalTypes": ["Instance"],
                    "resourceTypes": [res],
                    "context": ctx.clone()
                }}),
            )
        })
        .collect();
    let schema = json!({"": {
        "entityTypes": {
            "Agent": {},
            "User": {},
            "Connector": {},
            "Instance": {"memberOfTypes": ["Agent", "User"], "shape": {"type": "Record", "attributes": {
                "agent": string(), "instance": string(), "user": string()
            }}},
            "Tool": named("name"),
            "Resource": named("uri"),
            "Prompt": named("name")
        },
        "actions": actions
    }});
    Schema::from_json_value(schema).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_plausibility() {
        assert!(plausible_method("tools/call"));
        assert!(plausible_method("x-vendor/do.thing"));
        assert!(!plausible_method("tools call"));
        assert!(!plausible_method("/tools"));
        assert!(!plausible_method(""));
        assert_eq!(closest_method("tool/call"), Some("tools/call"));
        assert_eq!(closest_method("completely/different/thing"), None);
    }

    #[test]
    fn schema_builds() {
        let m: Vec<String> = KNOWN_METHODS.iter().map(|s| s.to_string()).collect();
        let d: Vec<String> = DEFAULT_DETECTORS.iter().map(|s| s.to_string()).collect();
        build_schema(&m, &d).expect("schema must build");
    }
}
