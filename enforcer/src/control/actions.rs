//! Mutating admin actions and their preview: what a revocation would touch (impact), the
//! revocation itself (persist, kernel deny, protocol-level session end, socket kill), its
//! lifting, and session termination, each recorded in the admin log with who, why and what
//! happened.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tracing::info;

use super::{
    admin_log::{AdminRecord, Who},
    auth::Peer,
    queries::QueryError,
    Control,
};
use crate::{
    kernel::KernelMaps,
    proxy::{revocations::covers, SessionHandle},
    revocation::{self, Revocation, RevokeError, Target, TargetSpec},
    sessions::CloseReason,
};

fn query_error(e: RevokeError) -> QueryError {
    match e {
        RevokeError::UnknownInstance(_)
        | RevokeError::UnknownUser(_)
        | RevokeError::AmbiguousInstance { .. } => QueryError::NotFound(e.to_string()),
        RevokeError::NoTarget | RevokeError::Cgroup(_) => QueryError::BadRequest(e.to_string()),
        other => QueryError::Store(other.to_string()),
    }
}

/// A revocation target from the request: one of agent, instance, user, binding, connector.
/// Bindings and connectors must be configured ones.
pub fn target_of(control: &Control, body: &Value) -> Result<Target, QueryError> {
    let spec: TargetSpec = serde_json::from_value(body.clone())
        .map_err(|e| QueryError::BadRequest(format!("target: {e}")))?;
    let target = spec
        .resolve(&control.tree, &control.revocations)
        .map_err(query_error)?;
    let known = match &target {
        Target::Binding { binding } => control
            .proxy
            .credentials
            .bindings()
            .iter()
            .any(|b| &b.id == binding),
        Target::Connector { connector } => control
            .proxy
            .connectors
            .all()
            .iter()
            .any(|c| &c.id == connector),
        _ => true,
    };
    if !known {
        return Err(QueryError::NotFound(format!(
            "no {target} is configured (see `enforcer {}s`)",
            target.scope()
        )));
    }
    Ok(target)
}

/// What a preview covers: a revocation target, or one session (termination).
pub enum Scope {
    Target(Target),
    Session(String),
}

impl Scope {
    fn covers(&self, control: &Control, s: &SessionHandle) -> bool {
        match self {
            Scope::Target(t) => covers(&control.proxy, t, s),
            Scope::Session(id) => &s.id == id,
        }
    }

    fn name(&self) -> String {
        match self {
            Scope::Target(t) => t.to_string(),
            Scope::Session(id) => format!("session {id}"),
        }
    }
}

/// The scope of an impact query: `session=` or a revocation target.
pub fn scope_of(control: &Control, body: &Value) -> Result<Scope, QueryError> {
    if let Some(id) = body.get("session").and_then(Value::as_str) {
        if control.proxy.sessions.find(|s| s.id == id).is_empty() {
            return Err(QueryError::NotFound(format!("no live session {id}")));
        }
        return Ok(Scope::Session(id.to_string()));
    }
    target_of(control, body).map(Scope::Target)
}

/// Everything a revocation (or termination) of `scope` would touch, changing nothing.
pub fn impact(control: &Control, scope: &Scope) -> Result<Value, QueryError> {
    impact_with(control, scope, true)
}

/// `impact`, optionally without counting live flows in the kernel maps (a scan of every
/// tracked socket: the revocation itself skips it, its kill report counts them).
fn impact_with(control: &Control, scope: &Scope, count_flows: bool) -> Result<Value, QueryError> {
    let handles = control.proxy.sessions.find(|s| scope.covers(control, s));
    let mut sessions: Vec<_> = handles.iter().map(|s| s.info()).collect();
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    // Instances: the kernel's view for agent, instance and user scopes; the sessions' owners
    // otherwise.
    let (cgroups, _) = match scope {
        Scope::Target(t) => revocation::kill_scope(&control.tree, t).map_err(query_error)?,
        Scope::Session(_) => (Vec::new(), Vec::new()),
    };
    let mut instances: Vec<(String, String, u64)> = control
        .tree
        .instances()
        .into_iter()
        .filter(|(_, _, id)| {
            cgroups.contains(id) || sessions.iter().any(|s| s.owner.instance_id == *id)
        })
        .collect();
    if let Scope::Target(Target::Agent { agent }) = scope {
        instances.retain(|(a, _, _)| a == agent);
    }
    let agent_ids: Vec<u64> = control
        .tree
        .agents()
        .into_iter()
        .filter(|(_, id)| cgroups.contains(id))
        .map(|(_, id)| id)
        .collect();
    let mut agents: Vec<String> = instances
        .iter()
        .map(|(a, _, _)| a.clone())
        .chain(sessions.iter().map(|s| s.owner.agent.clone()))
        .collect();
    agents.sort();
    agents.dedup();
    let mut connectors: Vec<String> = sessions.iter().map(|s| s.connector.clone()).collect();
    match scope {
        Scope::Target(Target::Connector { connector }) => connectors.push(connector.clone()),
        Scope::Target(Target::Binding { binding }) => connectors.extend(
            control
                .proxy
                .credentials
                .bindings()
                .iter()
                .filter(|b| &b.id == binding)
                .map(|b| b.connector.clone()),
        ),
        _ => {}
    }
    connectors.sort();
    connectors.dedup();
    let bindings: Vec<Value> = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .filter(|b| match scope {
            Scope::Target(Target::Binding { binding }) => &b.id == binding,
            Scope::Target(Target::Connector { connector }) => &b.connector == connector,
            _ => {
                // Bindings these agents' sessions use, or that name one of the agents.
                handles.iter().any(|s| {
                    control
                        .proxy
                        .credentials
                        .binding_for(&s.connector, &s.owner.agent, &s.owner.user)
                        .is_some_and(|x| x.id == b.id)
                }) || b.agent.as_ref().is_some_and(|a| agents.contains(a))
            }
        })
        .map(|b| json!({ "id": b.id, "version": b.version, "reference": format!("{}@v{}", b.id, b.version), "connector": b.connector, "agent": b.agent }))
        .collect();
    // Live flows per leg: from the kernel maps for cgroup scopes; the sessions' own client
    // flows otherwise (the proxy holds both legs of those).
    let client_flows: usize = handles.iter().map(|s| s.client_flows()).sum();
    let (agent_sockets, proxy_legs) = if cgroups.is_empty() {
        (client_flows, client_flows)
    } else if !count_flows {
        (0, 0)
    } else {
        let mut ids = cgroups.clone();
        ids.extend(agent_ids);
        match KernelMaps::open(&control.pin_dir) {
            Ok(maps) => revocation::count_sockets(&maps, &ids),
            Err(_) => (0, 0),
        }
    };
    let already_revoked = match scope {
        Scope::Target(t) => control
            .revocations
            .load()
            .unwrap_or_default()
            .iter()
            .any(|r| &r.target == t),
        Scope::Session(_) => false,
    };
    Ok(json!({
        "target": scope.name(),
        "scope": match scope { Scope::Target(t) => t.scope(), Scope::Session(_) => "session" },
        "already_revoked": already_revoked,
        "sessions": sessions,
        "agents": agents,
        "instances": instances.iter().map(|(a, i, id)| json!({ "agent": a, "instance": i, "cgroup_id": id })).collect::<Vec<_>>(),
        "bindings": bindings,
        "connectors": connectors,
        "flows": { "agent_sockets": agent_sockets, "proxy_legs": proxy_legs, "client_flows": client_flows },
    }))
}

fn who(peer: &Peer, body: &Value) -> Who {
    Who {
        uid: peer.uid,
        user: peer.user.clone(),
        sudo_user: body
            .get("sudo_user")
            .and_then(Value::as_str)
            .map(String::from),
    }
}

fn reason_of(body: &Value) -> Result<String, QueryError> {
    match body.get("reason").and_then(Value::as_str).map(str::trim) {
        Some(r) if !r.is_empty() => Ok(r.to_string()),
        _ => Err(QueryError::BadRequest(
            "a reason is required (it is recorded in the admin log)".into(),
        )),
    }
}

/// The admin-log action name: "revoke", or "disable" when the CLI's disable command asked.
fn action_of(body: &Value, default: &str) -> String {
    match body.get("action").and_then(Value::as_str) {
        Some(a @ ("disable" | "enable")) => a.to_string(),
        _ => default.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueryError::Store(e.to_string()))?
}

/// Wait (at most the proxy's grace period) until the ended sessions' client flows have
/// delivered their in-flight errors and closed.
async fn drain(sessions: &[Arc<SessionHandle>]) {
    let deadline = Instant::now() + crate::proxy::http::SESSION_END_GRACE;
    while Instant::now() < deadline && sessions.iter().any(|s| s.client_flows() > 0) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Revoke: persist and deny in the kernel (no new connects from now on), end the sessions at
/// the protocol level (in-flight calls get a `revoked` error), destroy both legs' remaining
/// sockets, record.
pub async fn revoke(control: Arc<Control>, peer: &Peer, body: Value) -> Result<Value, QueryError> {
    let target = target_of(&control, &body)?;
    let reason = reason_of(&body)?;
    let action = action_of(&body, "revoke");
    // When the confirmed request arrived, on the clock every process of the host shares (the
    // kill benchmark measures from here to the last flow's death).
    let received_ns = monotonic_ns();
    let preview = impact_with(&control, &Scope::Target(target.clone()), false)?;
    let who = who(peer, &body);
    let rev = Revocation {
        target: target.clone(),
        reason: reason.clone(),
        by_uid: who.uid,
        by_user: match &who.sudo_user {
            Some(s) => format!("{} (sudo from {s})", who.user),
            None => who.user.clone(),
        },
        at: super::admin_log::now(),
    };
    // The sessions to drain, taken before the revocation file changes: the revocation
    // follower may end them first, and the kernel kill must still wait for their in-flight
    // errors to be written.
    let handles = control
        .proxy
        .sessions
        .find(|s| covers(&control.proxy, &target, s));
    let started = Instant::now();
    let c = control.clone();
    let r = rev.clone();
    blocking(move || {
        let mut maps =
            KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
        revocation::deny_in_kernel(&c.tree, &mut maps, &r.target).map_err(query_error)
    })
    .await?;
    // In force in the kernel; saved (an fsync) while the sessions end and the sockets die.
    let c = control.clone();
    let r = rev.clone();
    let persisted = tokio::task::spawn_blocking(move || c.revocations.add(r));
    let mut all = control.revocations.load().unwrap_or_default();
    if !all.iter().any(|r| r.target == rev.target) {
        all.push(rev.clone());
    }
    crate::proxy::revocations::refresh_blocked(&control.proxy, &all);
    let mut ended = crate::proxy::revocations::end_sessions(&control.proxy, &rev).await;
    drain(&handles).await;
    let c = control.clone();
    let t = target.clone();
    let kill = blocking(move || {
        let maps = KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
        let (ids, pids) = revocation::kill_scope(&c.tree, &t).map_err(query_error)?;
        revocation::kill_cgroups(&maps, &ids, pids).map_err(|e| QueryError::Store(e.to_string()))
    })
    .await?;
    let total_us = started.elapsed().as_micros() as u64;
    persisted
        .await
        .map_err(|e| QueryError::Store(e.to_string()))?
        .map_err(|e| {
            QueryError::Store(format!(
                "{target} is revoked in the kernel but the revocation could not be saved (it would not survive a reboot): {e}"
            ))
        })?;
    control.proxy.metrics.revocation(
        metrics_scope(&target),
        started.elapsed(),
        (kill.agent_sockets_destroyed + kill.proxy_legs_destroyed) as u64,
    );
    // The revocation follower may have ended some first (it watches the same file): every
    // session the preview saw live was ended by this revocation, by either path.
    for id in preview["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
    {
        if !ended.iter().any(|e| e == id) {
            ended.push(id.to_string());
        }
    }
    let record = control
        .admin
        .append(AdminRecord {
            time: super::admin_log::now(),
            who,
            action: action.clone(),
            target: target.to_string(),
            affected: ended.clone(),
            reason,
            result: if kill.failed == 0 { "ok" } else { "partial" }.into(),
            details: json!({ "kill": kill, "elapsed_us": total_us, "sessions_ended": ended.len(), "impact": preview }),
            mode: "daemon".into(),
            ..Default::default()
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    info!(target = %target, %action, admin_record = %record.id, kill_us = kill.elapsed.as_micros() as u64, total_us, "revoked through the admin API");
    Ok(json!({
        "target": target,
        "action": action,
        "revoked": true,
        "kill": kill,
        "elapsed_us": total_us,
        "received_monotonic_ns": received_ns,
        "sessions_ended": ended,
        "admin_record": record.id,
    }))
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn metrics_scope(t: &Target) -> crate::metrics::RevocationScope {
    use crate::metrics::RevocationScope as S;
    match t {
        Target::Agent { .. } => S::Agent,
        Target::Instance { .. } => S::Instance,
        Target::User { .. } => S::User,
        Target::Binding { .. } => S::Binding,
        Target::Connector { .. } => S::Connector,
    }
}

/// Lift a revocation, recorded.
pub async fn reinstate(
    control: Arc<Control>,
    peer: &Peer,
    body: Value,
) -> Result<Value, QueryError> {
    let target = target_of(&control, &body)?;
    let reason = reason_of(&body)?;
    let c = control.clone();
    let t = target.clone();
    let existed = blocking(move || {
        let mut maps =
            KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
        revocation::reinstate(&c.tree, &c.revocations, &mut maps, &t).map_err(query_error)
    })
    .await?;
    let all = control.revocations.load().unwrap_or_default();
    crate::proxy::revocations::refresh_blocked(&control.proxy, &all);
    let record = control
        .admin
        .append(AdminRecord {
            time: super::admin_log::now(),
            who: who(peer, &body),
            action: action_of(&body, "reinstate"),
            target: target.to_string(),
            reason,
            result: if existed { "ok" } else { "not_revoked" }.into(),
            details: json!({ "was_revoked": existed }),
            mode: "daemon".into(),
            ..Default::default()
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    Ok(json!({ "target": target, "was_revoked": existed, "admin_record": record.id }))
}

/// Record a policy action (load / activate) in the admin log.
pub fn record_policy(
    control: &Control,
    peer: &Peer,
    body: &Value,
    action: &str,
    version: &str,
    details: Value,
) {
    let record = AdminRecord {
        time: super::admin_log::now(),
        who: who(peer, body),
        action: action.into(),
        target: format!("policy {version}"),
        affected: vec![version.to_string()],
        reason: body
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        result: "ok".into(),
        details,
        mode: "daemon".into(),
        ..Default::default()
    };
    if let Err(e) = control.admin.append(record) {
        tracing::warn!(error = %e, "could not record a policy action in the admin log");
    }
}

/// End sessions at the protocol level (in-flight calls answered with a `session_terminated`
/// error, their MCP session ids answered 404 from now on, the server's sessions closed with
/// DELETE, the client flows closed) and, for an agent or instance, in the kernel too (both
/// legs' remaining sockets destroyed). Reconnects are refused only while a revocation stands;
/// this alone does not revoke.
pub async fn terminate(
    control: Arc<Control>,
    peer: &Peer,
    body: Value,
) -> Result<Value, QueryError> {
    let reason = reason_of(&body)?;
    let scope = match body.get("session").and_then(Value::as_str) {
        Some(id) => Scope::Session(id.to_string()),
        None => Scope::Target(target_of(&control, &body)?),
    };
    let sessions = control.proxy.sessions.find(|s| scope.covers(&control, s));
    if sessions.is_empty() {
        return Err(QueryError::NotFound(format!(
            "no live session for {}",
            scope.name()
        )));
    }
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut instance_ids = Vec::new();
    let mut pids = Vec::new();
    for s in &sessions {
        ids.push(s.id.clone());
        instance_ids.push(s.owner.instance_id);
        if let Ok(dir) = control.tree.instance_dir(&s.owner.agent, &s.owner.instance) {
            pids.extend(crate::cgroups::AgentsTree::pids_under(&dir));
        }
        control
            .proxy
            .terminated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(s.protocol_ids());
    }
    let close = CloseReason::new(
        "session_terminated",
        format!("the session was terminated by an administrator: {reason}"),
    );
    let closed = control
        .proxy
        .sessions
        .close_where(|s| ids.contains(&s.id), &close);
    drain(&sessions).await;
    let mut deleted = 0;
    for s in &sessions {
        deleted += delete_upstream(s, &s.protocol_ids()).await;
    }
    // The kernel side: destroy both legs' sockets of the instances concerned (a session-scoped
    // termination closes its own client flows above and leaves the instance's other sessions).
    let kill = match &scope {
        Scope::Target(Target::Agent { .. } | Target::Instance { .. } | Target::User { .. }) => {
            let c = control.clone();
            let cgroups = instance_ids.clone();
            Some(
                blocking(move || {
                    let maps = KernelMaps::open(&c.pin_dir)
                        .map_err(|e| QueryError::Store(e.to_string()))?;
                    revocation::kill_cgroups(&maps, &cgroups, pids)
                        .map_err(|e| QueryError::Store(e.to_string()))
                })
                .await?,
            )
        }
        _ => None,
    };
    let elapsed_us = started.elapsed().as_micros() as u64;
    for s in &sessions {
        let r = crate::proxy::revocations::session_receipt(
            &s.info(),
            "session_terminated",
            &format!("terminated by {} (uid {}): {reason}", peer.user, peer.uid),
        );
        if let Err(e) = control.proxy.record(r).await {
            tracing::warn!(error = %e, "could not record a session termination");
        }
    }
    let record = control
        .admin
        .append(AdminRecord {
            time: super::admin_log::now(),
            who: who(peer, &body),
            action: "terminate".into(),
            target: scope.name(),
            affected: closed.clone(),
            reason,
            result: "ok".into(),
            details: json!({ "sessions": closed.len(), "upstream_deletes": deleted, "kill": kill, "elapsed_us": elapsed_us }),
            mode: "daemon".into(),
            ..Default::default()
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    info!(target = %scope.name(), sessions = closed.len(), "sessions terminated by an admin");
    Ok(json!({
        "terminated": closed,
        "upstream_deletes": deleted,
        "kill": kill,
        "elapsed_us": elapsed_us,
        "admin_record": record.id,
    }))
}

/// DELETE each MCP session upstream (session era); returns how many the server accepted.
async fn delete_upstream(s: &crate::proxy::SessionHandle, protocol_ids: &[String]) -> usize {
    let Some((uri, headers)) = s
        .last_upstream
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return 0;
    };
    let mut ok = 0;
    for id in protocol_ids {
        let mut req = http::Request::new(crate::proxy::reply::full(bytes::Bytes::new()));
        *req.method_mut() = http::Method::DELETE;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers.clone();
        req.headers_mut().remove(http::header::CONTENT_TYPE);
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(0));
        if let Ok(v) = http::HeaderValue::from_str(id) {
            req.headers_mut().insert("mcp-session-id", v);
        }
        let sent =
            tokio::time::timeout(std::time::Duration::from_secs(2), s.state.request(req)).await;
        if let Ok(Ok(resp)) = sent {
            if resp.status().is_success() {
                ok += 1;
            }
        }
    }
    ok
}
