//! Configuration errors. They name the offending config field and the detector, never
//! any scanned text (there is none at config time) or bound secret.

/// Error building a [`super::Dlp`] from a [`super::DlpConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlpError {
    #[error("{field}: invalid regex for detector `{name}`: {message}")]
    InvalidPattern {
        field: String,
        name: String,
        message: String,
    },
    #[error("{field}: pattern of detector `{name}` can match the empty string")]
    EmptyMatch { field: String, name: String },
    #[error("{field}: unknown detector `{name}` (known: {known})")]
    UnknownDetector {
        field: String,
        name: String,
        known: String,
    },
    #[error("{field}: invalid detector name `{name}`: expected snake_case [a-z][a-z0-9_]*, at most 64 chars")]
    InvalidName { field: String, name: String },
    #[error("{field}: detector name `{name}` is already in use")]
    DuplicateName { field: String, name: String },
    #[error("dlp.custom: building the combined detector set failed: {message}")]
    Build { message: String },
}
