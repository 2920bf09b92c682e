//! The admin API: versioned HTTP with JSON over a unix socket (mode 0660, group
//! enforcer-admin), so `curl --unix-socket` works as well as the CLI. Every peer is identified
//! by SO_PEERCRED; anyone but root and the admin group is refused, and the refusal is logged.

pub mod auth;
pub mod client;

use std::{
    convert::Infallible,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tracing::{info, warn};

use auth::Peer;

use crate::proxy::ProxyContext;

pub const SOCKET_NAME: &str = "control.sock";
pub const API_PREFIX: &str = "/v1";

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

/// Bind the socket: owner root, group enforcer-admin when that group exists, mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    if let Ok(Some(g)) = nix::unistd::Group::from_name(auth::ADMIN_GROUP) {
        nix::unistd::chown(path, None, Some(g.gid)).map_err(std::io::Error::from)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, proxy: Arc<ProxyContext>) {
    info!("admin API listening");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer::new(c.uid(), c.gid(), c.pid()),
            Err(e) => {
                warn!(error = %e, "admin API: no peer credentials; connection dropped");
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let peer = Arc::new(peer);
            let service = hyper::service::service_fn(move |req| {
                let (proxy, peer) = (proxy.clone(), peer.clone());
                async move { Ok::<_, Infallible>(route(req, &proxy, &peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(req: Request<Incoming>, proxy: &ProxyContext, peer: &Peer) -> Response<Full<Bytes>> {
    if !auth::is_admin(peer) {
        warn!(uid = peer.uid, user = %peer.user, path = %req.uri().path(), "admin API: refused a caller outside the admin group");
        return reply(
            StatusCode::FORBIDDEN,
            json!({ "error": format!("user {} (uid {}) may not use the enforcer's admin API: \
                    it needs root or membership of the {} group", peer.user, peer.uid, auth::ADMIN_GROUP) }),
        );
    }
    let path = req.uri().path().trim_end_matches('/');
    let Some(path) = path.strip_prefix(API_PREFIX) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("unknown API version in {path}; this daemon serves {API_PREFIX}") }),
        );
    };
    match (req.method(), path) {
        (&Method::GET, "/sessions") => {
            reply(StatusCode::OK, json!({ "sessions": proxy.sessions.list() }))
        }
        (&Method::GET, "/connectors") => reply(
            StatusCode::OK,
            json!({ "connectors": proxy.connectors.all().iter().map(|c| json!({
                "id": c.id,
                "backend": c.backend.display,
                "route": c.route_name,
                "idle_limit_ms": c.idle_timeout.as_millis() as u64,
                "credential_mode_default": if c.mtls { "mtls" } else { "none" },
                "status": c.status(),
            })).collect::<Vec<_>>() }),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no such endpoint: {} {API_PREFIX}{path}", req.method()) }),
        ),
    }
}
