//! Literal ("bound") secrets: exact upstream credentials the enforcer injects, which
//! must never reach an agent or a log. Held only inside an Aho-Corasick automaton that
//! is rebuilt and swapped (behind an `RwLock<Arc<_>>`) when the set changes.

use aho_corasick::{AhoCorasick, MatchKind};

use super::detectors::MIN_BOUND_SECRET_LEN;
use super::error::DlpError;

#[derive(Default)]
pub(crate) struct BoundSet {
    pub ac: Option<AhoCorasick>,
    /// Shortest pattern in the automaton (usize::MAX when empty).
    pub min_len: usize,
    /// Number of distinct accepted secrets.
    pub count: usize,
}

impl BoundSet {
    pub fn empty() -> Self {
        BoundSet {
            ac: None,
            min_len: usize::MAX,
            count: 0,
        }
    }

    /// Build from raw secrets. Secrets shorter than [`MIN_BOUND_SECRET_LEN`] bytes are
    /// ignored. Each secret is also matched in its JSON-escaped form (so it is caught in
    /// raw JSON text passed to `redact_text`).
    pub fn build<I, S>(secrets: I) -> Result<Self, DlpError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut accepted: Vec<String> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .filter(|s| s.len() >= MIN_BOUND_SECRET_LEN)
            .collect();
        accepted.sort();
        accepted.dedup();
        let count = accepted.len();
        if count == 0 {
            return Ok(Self::empty());
        }
        let mut patterns = accepted.clone();
        for s in &accepted {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            let esc = quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default();
            if esc != s && esc.len() >= MIN_BOUND_SECRET_LEN {
                patterns.push(esc.to_string());
            }
        }
        let min_len = patterns.iter().map(String::len).min().unwrap_or(usize::MAX);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            // aho-corasick build errors describe sizes/limits only, never pattern bytes.
            .map_err(|e| DlpError::Build {
                message: format!("bound secrets: {e}"),
            })?;
        Ok(BoundSet {
            ac: Some(ac),
            min_len,
            count,
        })
    }
}
