//! `[dlp]` configuration section (serde, `deny_unknown_fields`).
//!
//! ```toml
//! [dlp]
//! enabled = true
//! results = "redact"        # redact | off      (matches in tool results)
//! arguments = "record"      # block | redact | record (matches in tool-call arguments)
//! disabled = ["email"]
//!
//! [dlp.detectors.credit_card]
//! arguments = "block"
//!
//! [[dlp.custom]]
//! name = "acme_key"
//! pattern = "acme_[0-9a-f]{32}"
//! arguments = "block"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// What happens to a match inside a tool result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultAction {
    /// Replace the match with `[REDACTED:<detector>]` and count it.
    #[default]
    Redact,
    /// Ignore this detector for tool results (neither redacted nor counted).
    Off,
}

/// What happens to a match inside tool-call arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgAction {
    /// The detector name is listed in `ArgumentsVerdict::block`; the caller refuses the call.
    Block,
    /// The match is replaced in `ArgumentsVerdict::redacted`; the call is forwarded redacted.
    Redact,
    /// Count only; the call is forwarded unchanged.
    #[default]
    Record,
}

/// Per-detector override: `[dlp.detectors.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorOverride {
    pub arguments: Option<ArgAction>,
    pub results: Option<ResultAction>,
}

/// A configured regex detector: `[[dlp.custom]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// snake_case, `[a-z][a-z0-9_]*`, at most 64 chars, distinct from built-in names.
    pub name: String,
    /// Rust `regex` syntax; must not match the empty string.
    pub pattern: String,
    /// Action for tool arguments; defaults to `[dlp] arguments`.
    pub arguments: Option<ArgAction>,
    /// Action for tool results; defaults to `[dlp] results`.
    pub results: Option<ResultAction>,
}

/// The `[dlp]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub results: ResultAction,
    #[serde(default)]
    pub arguments: ArgAction,
    #[serde(default)]
    pub detectors: BTreeMap<String, DetectorOverride>,
    #[serde(default)]
    pub disabled: Vec<String>,
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
}

fn default_true() -> bool {
    true
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig {
            enabled: true,
            results: ResultAction::Redact,
            arguments: ArgAction::Record,
            detectors: BTreeMap::new(),
            disabled: Vec::new(),
            custom: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_from_empty_table() {
        let c: DlpConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, DlpConfig::default());
        assert!(c.enabled);
        assert_eq!(c.results, ResultAction::Redact);
        assert_eq!(c.arguments, ArgAction::Record);
    }

    #[test]
    fn full_table_parses() {
        let c: DlpConfig = serde_json::from_value(json!({
            "enabled": false,
            "results": "off",
            "arguments": "block",
            "detectors": {"email": {"arguments": "redact"}},
            "disabled": ["jwt"],
            "custom": [{"name": "acme", "pattern": "acme_[0-9]{8}", "arguments": "record"}]
        }))
        .unwrap();
        assert!(!c.enabled);
        assert_eq!(c.results, ResultAction::Off);
        assert_eq!(c.arguments, ArgAction::Block);
        assert_eq!(c.detectors["email"].arguments, Some(ArgAction::Redact));
        assert_eq!(c.detectors["email"].results, None);
        assert_eq!(c.disabled, vec!["jwt".to_string()]);
        assert_eq!(c.custom[0].arguments, Some(ArgAction::Record));
    }

    #[test]
    fn unknown_fields_and_actions_rejected() {
        let e = serde_json::from_value::<DlpConfig>(json!({"enable": true})).unwrap_err();
        assert!(e.to_string().contains("enable"), "{e}");
        let e = serde_json::from_value::<DlpConfig>(json!({"arguments": "drop"})).unwrap_err();
        assert!(e.to_string().contains("drop"), "{e}");
        let e = serde_json::from_value::<DlpConfig>(json!({"results": "record"})).unwrap_err();
        assert!(e.to_string().contains("record"), "{e}");
        let e = serde_json::from_value::<DlpConfig>(
            json!({"detectors": {"email": {"argument": "block"}}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("argument"), "{e}");
        let e =
            serde_json::from_value::<DlpConfig>(json!({"custom": [{"name": "x_y", "regex": "a"}]}))
                .unwrap_err();
        assert!(e.to_string().contains("regex"), "{e}");
    }
}
