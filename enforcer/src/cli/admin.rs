//! How commands reach the daemon's admin API, and what they do when it is not running:
//! read-only commands open the store themselves (sled allows that only while the daemon is
//! stopped) and say so on stderr.

use std::process::ExitCode;

use serde_json::Value;

use super::exit;
use crate::{
    config::Config,
    control::{self, client::ClientError, queries::QueryError},
    store,
};

/// Print the daemon's refusal and map it to the CLI's exit code.
pub fn report(e: &ClientError) -> ExitCode {
    eprintln!("enforcer: {e}");
    ExitCode::from(match e {
        ClientError::NoAccess(_) | ClientError::Refused(_) => exit::REFUSED,
        ClientError::NotFound(_) => exit::NOT_FOUND,
        ClientError::BadRequest(_) => exit::USAGE,
        ClientError::NotRunning(_) | ClientError::Protocol(_) => exit::FAILURE,
    })
}

/// GET from the daemon.
pub fn get(config: &Config, path: &str) -> Result<Value, ExitCode> {
    let socket = control::socket_path(&config.paths.runtime_dir);
    control::client::get(&socket, path).map_err(|e| report(&e))
}

/// POST to the daemon (mutating commands need it running).
pub fn post(config: &Config, path: &str, body: &Value) -> Result<Value, ExitCode> {
    let socket = control::socket_path(&config.paths.runtime_dir);
    control::client::post(&socket, path, body).map_err(|e| report(&e))
}

/// GET from the daemon, or compute the same answer from the store when it is not running.
pub fn get_or_offline(
    config: &Config,
    path: &str,
    offline: impl FnOnce(&sled::Db) -> Result<Value, QueryError>,
) -> Result<Value, ExitCode> {
    let socket = control::socket_path(&config.paths.runtime_dir);
    match control::client::get(&socket, path) {
        Ok(v) => Ok(v),
        Err(ClientError::NotRunning(_)) => {
            let db = store::open(&config.store_dir(), None).map_err(|e| {
                eprintln!("enforcer: the daemon is not running and {e}");
                ExitCode::from(exit::FAILURE)
            })?;
            eprintln!(
                "(the daemon is not running: read from the store {} directly)",
                config.store_dir().display()
            );
            offline(&db).map_err(|e| {
                eprintln!("enforcer: {e}");
                ExitCode::from(match e {
                    QueryError::NotFound(_) => exit::NOT_FOUND,
                    QueryError::BadRequest(_) => exit::USAGE,
                    QueryError::Store(_) => exit::FAILURE,
                })
            })
        }
        Err(e) => Err(report(&e)),
    }
}

/// The caller's sudo user, which the daemon records beside the kernel-verified uid.
pub fn sudo_user() -> Value {
    std::env::var("SUDO_USER")
        .map(Value::String)
        .unwrap_or(Value::Null)
}
