//! The admin API: versioned HTTP with JSON over a unix socket (mode 0660, group
//! enforcer-admin), so `curl --unix-socket` works as well as the CLI. Every peer is identified
//! by SO_PEERCRED; anyone but root and the admin group is refused, and the refusal is logged.

mod actions;
pub mod admin_log;
pub mod auth;
pub mod client;
pub mod queries;
mod views;

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

use queries::QueryError;

use crate::{
    audit::AuditStore,
    cgroups::AgentsTree,
    gate::Gate,
    policy::{self, PolicyVersions},
    proxy::ProxyContext,
    revocation::RevocationStore,
};

/// What the admin API acts on.
pub struct Control {
    pub proxy: Arc<ProxyContext>,
    pub versions: PolicyVersions,
    pub gate: Arc<Gate>,
    pub audit: Arc<AuditStore>,
    pub compile: policy::CompileOptions,
    pub admin: Arc<admin_log::AdminLog>,
    pub tree: AgentsTree,
    pub revocations: RevocationStore,
    pub pin_dir: PathBuf,
}

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

pub async fn serve(listener: UnixListener, control: Arc<Control>) {
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
        let control = control.clone();
        tokio::spawn(async move {
            let peer = Arc::new(peer);
            let service = hyper::service::service_fn(move |req| {
                let (control, peer) = (control.clone(), peer.clone());
                async move { Ok::<_, Infallible>(route(req, control, &peer).await) }
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

fn answer(result: Result<Value, QueryError>) -> Response<Full<Bytes>> {
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => {
            let status = match &e {
                QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
                QueryError::NotFound(_) => StatusCode::NOT_FOUND,
                QueryError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            reply(status, json!({ "error": e.to_string() }))
        }
    }
}

/// Run a store query off the async workers (a search may walk many index entries; the proxy
/// may be on the same thread).
async fn blocking(
    f: impl FnOnce() -> Result<Value, QueryError> + Send + 'static,
) -> Response<Full<Bytes>> {
    answer(
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(QueryError::Store(format!("query failed: {e}")))),
    )
}

async fn read_json(req: Request<Incoming>) -> Result<Value, QueryError> {
    use http_body_util::BodyExt as _;
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| QueryError::BadRequest(format!("request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| QueryError::BadRequest(format!("request body is not JSON: {e}")))
}

async fn route(
    req: Request<Incoming>,
    control: Arc<Control>,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    if !auth::is_admin(peer) {
        warn!(uid = peer.uid, user = %peer.user, path = %req.uri().path(), "admin API: refused a caller outside the admin group");
        return reply(
            StatusCode::FORBIDDEN,
            json!({ "error": format!("user {} (uid {}) may not use the enforcer's admin API: \
                    it needs root or membership of the {} group", peer.user, peer.uid, auth::ADMIN_GROUP) }),
        );
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let Some(path) = path.strip_prefix(API_PREFIX) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("unknown API version in {path}; this daemon serves {API_PREFIX}") }),
        );
    };
    let params = queries::parse_params(req.uri().query());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let proxy = &control.proxy;
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["sessions"]) => {
            reply(StatusCode::OK, json!({ "sessions": proxy.sessions.list() }))
        }
        (Method::GET, ["sessions", id]) => answer(views::session(&control, id)),
        (Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            serde_json::to_value(proxy.metrics.snapshot()).unwrap_or_default(),
        ),
        (Method::GET, ["export"]) => reply(
            StatusCode::OK,
            json!({ "sinks": proxy.exporter.as_ref().map(|x| serde_json::to_value(x.status()).unwrap_or_default()) }),
        ),
        (Method::GET, ["connectors"]) => reply(StatusCode::OK, views::connectors(&control)),
        (Method::GET, ["connectors", id]) => answer(views::connector(&control, id)),
        (Method::GET, ["agents"]) => reply(StatusCode::OK, views::agents(&control)),
        (Method::GET, ["agents", name]) => answer(views::agent(&control, name)),
        (Method::GET, ["bindings"]) => reply(StatusCode::OK, views::bindings(&control)),
        (Method::GET, ["bindings", id]) => answer(views::binding(&control, id)),
        (Method::GET, ["receipts"]) => {
            let audit = control.audit.clone();
            blocking(move || queries::search(&audit, &params)).await
        }
        (Method::GET, ["receipts", id]) => {
            let (audit, id) = (control.audit.clone(), id.to_string());
            blocking(move || queries::receipt(&audit, &id)).await
        }
        (Method::GET, ["audit", "verify"]) => {
            let audit = control.audit.clone();
            blocking(move || queries::verify(&audit)).await
        }
        (Method::GET, ["sessions", id, "recording"]) => {
            let (audit, id) = (control.audit.clone(), id.to_string());
            blocking(move || queries::replay(&audit, &id)).await
        }
        (Method::GET, ["policy"]) => reply(StatusCode::OK, policy_state(&control)),
        (Method::GET, ["policy", "versions"]) => {
            let v = control.versions.clone();
            blocking(move || queries::policy_history(&v)).await
        }
        (Method::GET, ["policy", "versions", id]) => {
            let (v, id) = (control.versions.clone(), id.to_string());
            blocking(move || queries::policy_version(&v, &id)).await
        }
        (Method::GET, ["policy", "diff"]) => {
            let v = control.versions.clone();
            let (Some(from), Some(to)) = (params.get("from").cloned(), params.get("to").cloned())
            else {
                return answer(Err(QueryError::BadRequest(
                    "diff needs from= and to=".into(),
                )));
            };
            blocking(move || queries::policy_diff(&v, &from, &to)).await
        }
        (Method::POST, ["policy"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return answer(Err(e)),
            };
            answer(load_policy(&control, peer, &body))
        }
        (Method::POST, ["policy", "activate"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return answer(Err(e)),
            };
            answer(activate_policy(&control, peer, &body))
        }
        (Method::GET, ["impact"]) => {
            let body = serde_json::to_value(&params).unwrap_or_default();
            answer(actions::scope_of(&control, &body).and_then(|s| actions::impact(&control, &s)))
        }
        (Method::POST, ["revocations"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return answer(Err(e)),
            };
            answer(actions::revoke(control.clone(), peer, body).await)
        }
        (Method::POST, ["revocations", "lift"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return answer(Err(e)),
            };
            answer(actions::reinstate(control.clone(), peer, body).await)
        }
        (Method::POST, ["sessions", "terminate"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(e) => return answer(Err(e)),
            };
            answer(actions::terminate(control.clone(), peer, body).await)
        }
        (Method::GET, ["admin-log"]) => {
            let limit = params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            answer(
                control
                    .admin
                    .list(
                        params.get("action").map(String::as_str),
                        params.get("target").map(String::as_str),
                        limit,
                    )
                    .map(|records| json!({ "records": records }))
                    .map_err(|e| QueryError::Store(e.to_string())),
            )
        }
        (Method::GET, ["admin-log", "verify"]) => answer(
            control
                .admin
                .verify()
                .map(|r| json!({ "ok": r.is_ok(), "report": r }))
                .map_err(|e| QueryError::Store(e.to_string())),
        ),
        (method, _) => reply(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no such endpoint: {method} {API_PREFIX}{path}") }),
        ),
    }
}

/// Who did it, as recorded: user, uid, and the sudo user the CLI reports (its word).
fn actor_of(peer: &Peer, body: &Value) -> String {
    match body.get("sudo_user").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => format!("{} (uid {}, sudo from {s})", peer.user, peer.uid),
        _ => format!("{} (uid {})", peer.user, peer.uid),
    }
}

fn policy_state(control: &Control) -> Value {
    let active = control.gate.active();
    json!({
        "environment": control.gate.environment,
        "mode": format!("{:?}", control.gate.mode).to_lowercase(),
        "defaults": control.gate.defaults,
        "active": active.as_ref().map(|a| &a.meta),
        "rules": active.as_ref().map(|a| a.policy.rules().to_vec()).unwrap_or_default(),
    })
}

/// Compile, store as a new version and put in force; a policy that does not compile changes
/// nothing and the errors come back with file, line and column.
fn load_policy(control: &Control, peer: &Peer, body: &Value) -> Result<Value, QueryError> {
    let source = body
        .get("source")
        .and_then(Value::as_str)
        .ok_or_else(|| QueryError::BadRequest("body needs \"source\" (the policy text)".into()))?;
    let file_name = body
        .get("file_name")
        .and_then(Value::as_str)
        .unwrap_or("policy.cedar");
    let by = actor_of(peer, body);
    let compiled =
        policy::Policy::compile_with(source, file_name, &control.compile).map_err(|e| {
            QueryError::BadRequest(format!(
                "policy refused; the active version stays in force:\n{e}"
            ))
        })?;
    let warnings: Vec<String> = compiled.warnings().iter().map(|w| w.to_string()).collect();
    let meta = control
        .versions
        .store(&compiled, &by)
        .map_err(|e| QueryError::Store(e.to_string()))?;
    control.gate.activate(meta.clone(), compiled);
    info!(version = %meta.id, by = %by, rules = meta.rules, "policy version loaded and in force");
    actions::record_policy(
        control,
        peer,
        body,
        "policy_load",
        &meta.id,
        json!({ "hash": meta.hash, "rules": meta.rules, "file": meta.file_name, "same_as": meta.same_as }),
    );
    Ok(json!({ "version": meta, "warnings": warnings }))
}

fn activate_policy(control: &Control, peer: &Peer, body: &Value) -> Result<Value, QueryError> {
    let id = body
        .get("version")
        .and_then(Value::as_str)
        .ok_or_else(|| QueryError::BadRequest("body needs \"version\"".into()))?;
    let by = actor_of(peer, body);
    let (stored, source) = control
        .versions
        .get(id)
        .map_err(|e| QueryError::NotFound(format!("policy version {id}: {e}")))?;
    let compiled = policy::Policy::compile_with(&source, &stored.file_name, &control.compile)
        .map_err(|e| {
            QueryError::BadRequest(format!("version {id} no longer compiles here:\n{e}"))
        })?;
    let (meta, _) = control
        .versions
        .activate(id, &by)
        .map_err(|e| QueryError::Store(e.to_string()))?;
    control.gate.activate(meta.clone(), compiled);
    info!(version = %meta.id, by = %by, "policy version re-activated");
    actions::record_policy(
        control,
        peer,
        body,
        "policy_activate",
        &meta.id,
        json!({ "hash": meta.hash }),
    );
    Ok(json!({ "version": meta }))
}
