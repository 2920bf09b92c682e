//! Data-loss prevention for MCP traffic: detects secrets and personal data in JSON
//! values and text, masks them in tool results (`[REDACTED:<detector>]`) and yields a
//! verdict for tool-call arguments (block / redact / record per detector).
//!
//! * Built-in detectors: see [`detectors::builtin_names`]; plus `[[dlp.custom]]` regex
//!   detectors and `bound_secret` (exact runtime values, see [`Dlp::set_bound_secrets`]).
//! * Hot path: one `RegexSet` pass per string (plus one Aho-Corasick pass when bound
//!   secrets are set); strings shorter than the shortest possible match are skipped;
//!   per-detector regexes only run on strings the set flagged.
//! * Nothing here ever stores or reports matched text: [`Findings`] holds counts only.

mod bound;
mod config;
mod detectors;
mod error;
mod findings;
mod luhn;
mod redact;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use regex::{Regex, RegexSet};

pub use config::DlpConfig;
use config::{ArgAction, ResultAction};
pub use detectors::BOUND_SECRET;
pub use error::DlpError;
pub use findings::Findings;

use bound::BoundSet;
use detectors::{Validator, BUILTINS};

/// Marker prefix; `[REDACTED:<detector>]` spans are never matched again.
pub const MARKER_PREFIX: &str = "[REDACTED:";

/// Result of [`Dlp::arguments_verdict`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgumentsVerdict {
    /// Matches per detector (all actions, including `record`).
    pub findings: Findings,
    /// Detectors with action `block` that matched (sorted, deduplicated). Non-empty means
    /// the caller should refuse the call.
    pub block: Vec<String>,
    /// The arguments with `redact`-action matches replaced; `None` when nothing needs
    /// redacting (forward the original).
    pub redacted: Option<serde_json::Value>,
}

impl ArgumentsVerdict {
    #[cfg(test)]
    pub fn blocked(&self) -> bool {
        !self.block.is_empty()
    }
}

/// One enabled detector (index into `Dlp::dets` = priority, lower wins ties).
struct Det {
    name: String,
    results: ResultAction,
    arguments: ArgAction,
}

/// One regex of the set; `RegexSet` pattern `i` is `regexes[i]`.
struct Rx {
    regex: Regex,
    group: usize,
    validator: Validator,
    det: usize,
}

/// The compiled DLP engine. `Send + Sync`; share it behind an `Arc`.
pub struct Dlp {
    enabled: bool,
    dets: Vec<Det>,
    set: Option<RegexSet>,
    regexes: Vec<Rx>,
    /// Shortest string any regex detector can match (usize::MAX if none).
    min_regex_len: usize,
    bound_det: Option<usize>,
    aws_secret_det: Option<usize>,
    bound: RwLock<Arc<BoundSet>>,
}

impl fmt::Debug for Dlp {
    /// Never prints bound secrets (only their number).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dlp")
            .field("enabled", &self.enabled)
            .field("detectors", &self.detector_names())
            .field("bound_secrets", &self.bound_secret_count())
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Shortest match length of a pattern (`None` if it cannot be computed).
fn min_match_len(pattern: &str) -> Option<usize> {
    regex_automata::util::syntax::parse(pattern)
        .ok()?
        .properties()
        .minimum_len()
}

impl Dlp {
    /// Compile the configuration. Errors name the offending field (e.g.
    /// `dlp.custom[0].pattern`, `dlp.disabled[1]`, `dlp.detectors.foo`).
    pub fn new(cfg: &DlpConfig) -> Result<Dlp, DlpError> {
        // Known names: built-ins, then customs (validated, unique).
        let mut known: Vec<String> = detectors::builtin_names().map(str::to_string).collect();
        for (i, c) in cfg.custom.iter().enumerate() {
            let field = format!("dlp.custom[{i}].name");
            if !valid_name(&c.name) {
                return Err(DlpError::InvalidName {
                    field,
                    name: c.name.clone(),
                });
            }
            if known.contains(&c.name) {
                return Err(DlpError::DuplicateName {
                    field,
                    name: c.name.clone(),
                });
            }
            known.push(c.name.clone());
        }
        let unknown = |field: String, name: &str| DlpError::UnknownDetector {
            field,
            name: name.to_string(),
            known: known.join(", "),
        };
        let mut disabled = BTreeSet::new();
        for (i, d) in cfg.disabled.iter().enumerate() {
            if !known.iter().any(|k| k == d) {
                return Err(unknown(format!("dlp.disabled[{i}]"), d));
            }
            disabled.insert(d.as_str());
        }
        for name in cfg.detectors.keys() {
            if !known.iter().any(|k| k == name) {
                return Err(unknown(format!("dlp.detectors.{name}"), name));
            }
        }
        let ov = |name: &str| cfg.detectors.get(name).cloned().unwrap_or_default();

        let mut dets = Vec::new();
        let mut regexes = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut min_regex_len = usize::MAX;
        let mut bound_det = None;
        let mut aws_secret_det = None;

        if !disabled.contains(BOUND_SECRET) {
            let o = ov(BOUND_SECRET);
            bound_det = Some(dets.len());
            dets.push(Det {
                name: BOUND_SECRET.to_string(),
                // Bound secrets are redacted in results even when `results = "off"`;
                // only an explicit per-detector override (or `disabled`) turns that off.
                results: o.results.unwrap_or(ResultAction::Redact),
                arguments: o.arguments.unwrap_or(cfg.arguments),
            });
        }
        for b in BUILTINS {
            if disabled.contains(b.name) {
                continue;
            }
            let o = ov(b.name);
            let det = dets.len();
            if b.name == "aws_secret_key" {
                aws_secret_det = Some(det);
            }
            dets.push(Det {
                name: b.name.to_string(),
                results: o.results.unwrap_or(cfg.results),
                arguments: o.arguments.unwrap_or(cfg.arguments),
            });
            let regex = Regex::new(b.pattern).map_err(|e| DlpError::Build {
                message: format!("built-in {}: {e}", b.name),
            })?;
            min_regex_len = min_regex_len.min(min_match_len(b.pattern).unwrap_or(1).max(1));
            regexes.push(Rx {
                regex,
                group: b.group,
                validator: b.validator,
                det,
            });
            patterns.push(b.pattern.to_string());
        }
        for (i, c) in cfg.custom.iter().enumerate() {
            let field = format!("dlp.custom[{i}].pattern");
            let regex = Regex::new(&c.pattern).map_err(|e| DlpError::InvalidPattern {
                field: field.clone(),
                name: c.name.clone(),
                message: e.to_string(),
            })?;
            let min = min_match_len(&c.pattern).unwrap_or(0);
            if min == 0 || regex.is_match("") {
                return Err(DlpError::EmptyMatch {
                    field,
                    name: c.name.clone(),
                });
            }
            if disabled.contains(c.name.as_str()) {
                continue;
            }
            let o = ov(&c.name);
            let det = dets.len();
            dets.push(Det {
                name: c.name.clone(),
                results: o.results.or(c.results).unwrap_or(cfg.results),
                arguments: o.arguments.or(c.arguments).unwrap_or(cfg.arguments),
            });
            min_regex_len = min_regex_len.min(min);
            regexes.push(Rx {
                regex,
                group: 0,
                validator: Validator::None,
                det,
            });
            patterns.push(c.pattern.clone());
        }
        let set = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(&patterns).map_err(|e| DlpError::Build {
                message: e.to_string(),
            })?)
        };
        Ok(Dlp {
            enabled: cfg.enabled,
            dets,
            set,
            regexes,
            min_regex_len,
            bound_det,
            aws_secret_det,
            bound: RwLock::new(Arc::new(BoundSet::empty())),
        })
    }

    /// Names of the enabled detectors, in priority order (`bound_secret` first).
    pub fn detector_names(&self) -> Vec<&str> {
        self.dets.iter().map(|d| d.name.as_str()).collect()
    }

    /// Replace the set of literal secrets (cheap: builds a new automaton, then swaps an
    /// `Arc`; scans in flight keep the old set). Values shorter than
    /// [`MIN_BOUND_SECRET_LEN`] bytes are ignored. Returns how many distinct secrets
    /// were accepted. The values are not kept anywhere else and never printed.
    pub fn set_bound_secrets<I, S>(&self, secrets: I) -> Result<usize, DlpError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let new = Arc::new(BoundSet::build(secrets)?);
        let n = new.count;
        *self.bound.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(n)
    }

    /// Number of literal secrets currently active.
    pub fn bound_secret_count(&self) -> usize {
        self.bound_snapshot().count
    }

    fn bound_snapshot(&self) -> Arc<BoundSet> {
        self.bound.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
