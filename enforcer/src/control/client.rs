//! The CLI's side of the admin API: one HTTP request over the unix socket.

use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the enforcer daemon is not running (no admin socket at {0}); start it with `enforcer daemon`")]
    NotRunning(String),
    #[error("permission denied on {0}: the admin API needs root or the enforcer-admin group")]
    NoAccess(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("admin API: {0}")]
    Protocol(String),
}

/// GET `path` (e.g. "/v1/sessions") and return the JSON body.
pub fn get(socket: &Path, path: &str) -> Result<Value, ClientError> {
    request(socket, Method::GET, path, None)
}

/// POST a JSON body to `path` and return the JSON answer.
pub fn post(socket: &Path, path: &str, body: &Value) -> Result<Value, ClientError> {
    request(socket, Method::POST, path, Some(body))
}

pub fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    rt.block_on(request_async(socket, method, path, body))
}

async fn request_async(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, ClientError> {
    let shown = socket.display().to_string();
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(shown.clone())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::NoAccess(shown.clone()),
            _ => ClientError::Protocol(format!("{shown}: {e}")),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::spawn(conn);
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "enforcer")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(payload))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("bad JSON from the daemon: {e}")))?;
    if !status.is_success() {
        let msg = value["error"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        return Err(match status {
            StatusCode::NOT_FOUND => ClientError::NotFound(msg),
            StatusCode::BAD_REQUEST => ClientError::BadRequest(msg),
            _ => ClientError::Refused(msg),
        });
    }
    Ok(value)
}
