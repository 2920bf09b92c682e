//! The one error type of the audit store. Every failure to record is an error the caller must
//! treat as "refuse the call" (fail closed).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("audit record encoding error: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("audit flush failed: {0}")]
    Flush(String),
    #[error("audit store lock poisoned")]
    Poisoned,
    #[error("invalid search cursor: {0}")]
    BadCursor(String),
    #[error("corrupt audit store: {0}")]
    Corrupt(String),
    #[error("receipts log: {0}")]
    Io(String),
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;

impl<T> From<std::sync::PoisonError<T>> for AuditError {
    fn from(_: std::sync::PoisonError<T>) -> Self {
        AuditError::Poisoned
    }
}

impl AuditError {
    /// A copy for every waiter of a failed batch and for the sticky state.
    pub fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Storage(e) => AuditError::Storage(e.clone()),
            AuditError::Encoding(e) => AuditError::Corrupt(format!("encoding: {e}")),
            AuditError::Flush(s) => AuditError::Flush(s.clone()),
            AuditError::Poisoned => AuditError::Poisoned,
            AuditError::BadCursor(s) => AuditError::BadCursor(s.clone()),
            AuditError::Corrupt(s) => AuditError::Corrupt(s.clone()),
            AuditError::Io(s) => AuditError::Io(s.clone()),
        }
    }
}
