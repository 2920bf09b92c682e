//! What can stop the exporter from starting. Delivery failures are not errors here: a sink
//! retries them forever and reports them in its status.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A sink's settings are unusable (bad URL, unknown scheme, unreadable file...).
    #[error("export sink {sink}: {message}")]
    Config { sink: String, message: String },
    /// Two sources claim the same kind, or a source has a kind no sink knows.
    #[error("export source: {0}")]
    Source(String),
    #[error("export cursor file {path}: {message}")]
    Cursor { path: PathBuf, message: String },
    #[error("Exporter::start must be called inside a tokio runtime")]
    NoRuntime,
}

impl ExportError {
    pub(crate) fn config(sink: &str, message: impl Into<String>) -> Self {
        ExportError::Config {
            sink: sink.to_string(),
            message: message.into(),
        }
    }
}
