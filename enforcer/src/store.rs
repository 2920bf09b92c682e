//! The daemon's sled database (receipts, policy versions, the admin log). sled allows one
//! process at a time: while the daemon runs, everything goes through its admin API; with the
//! daemon stopped, the CLI opens the store itself (read paths, and break-glass).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {0} is in use by a running daemon; ask the daemon (admin API) instead")]
    Busy(String),
    #[error("cannot open the store {path}: {message}")]
    Open { path: String, message: String },
}

/// Open (creating if needed) the store at `dir`, mode 0700.
pub fn open(dir: &Path, flush_every_ms: Option<u64>) -> Result<sled::Db, StoreError> {
    let shown = dir.display().to_string();
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    }
    let db = sled::Config::new()
        .path(dir)
        .flush_every_ms(flush_every_ms)
        .cache_capacity(256 * 1024 * 1024)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Busy(shown.clone())
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => {
                StoreError::Busy(shown.clone())
            }
            other => StoreError::Open {
                path: shown.clone(),
                message: other.to_string(),
            },
        })?;
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(db)
}
