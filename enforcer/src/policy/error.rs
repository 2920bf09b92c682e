//! Error types: compiler-style check diagnostics and the module-level error.

use serde::Serialize;
use std::fmt;

/// How serious a [`CheckError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The policy is refused.
    Error,
    /// The policy is accepted but something looks wrong.
    Warning,
}

/// One diagnostic about a policy file, located at `file:line:column` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    /// What to change to fix it.
    pub hint: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n    hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// All errors (and warnings) found while compiling a policy. Returned only
/// when there is at least one error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct CheckErrors {
    pub errors: Vec<CheckError>,
    pub warnings: Vec<CheckError>,
}

impl CheckErrors {
    pub(crate) fn sort(&mut self) {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.warnings.sort_by_key(|e| (e.line, e.column));
    }
}

impl fmt::Display for CheckErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in self.errors.iter().chain(self.warnings.iter()) {
            writeln!(f, "{e}")?;
        }
        write!(
            f,
            "{} error(s), {} warning(s)",
            self.errors.len(),
            self.warnings.len()
        )
    }
}

/// Errors of the policy store, the case runner and friends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("policy refused:\n{0}")]
    Check(#[from] CheckErrors),
    #[error("policy store: {0}")]
    Store(#[from] sled::Error),
    #[error("policy store record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("no policy version {0:?}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    CaseFile { path: String, message: String },
}
