//! Mutating admin actions and their preview: what a revocation would touch (impact), the
//! revocation itself (persist, kernel deny, socket kill, protocol-level session end), its
//! lifting, each recorded in the admin log with who, why and what happened.

use std::sync::Arc;

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
    revocation::{self, Revocation, Target},
    sessions::SessionInfo,
};

/// A revocation target from the request: {"agent": "..."} or {"instance": "agent/instance"}.
pub fn target_of(control: &Control, body: &Value) -> Result<Target, QueryError> {
    if let Some(agent) = body.get("agent").and_then(Value::as_str) {
        crate::cgroups::validate_name("agent", agent)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        return Ok(Target::Agent {
            agent: agent.to_string(),
        });
    }
    if let Some(spec) = body.get("instance").and_then(Value::as_str) {
        return revocation::find_instance(&control.tree, spec).or_else(|e| {
            // A revoked instance that has exited can still be named (to lift it).
            control
                .revocations
                .load()
                .ok()
                .into_iter()
                .flatten()
                .map(|r| r.target)
                .find(|t| matches!(t, Target::Instance { agent, instance, .. } if spec == instance || spec == format!("{agent}/{instance}")))
                .ok_or_else(|| QueryError::NotFound(e.to_string()))
        });
    }
    Err(QueryError::BadRequest(
        "name a target: \"agent\" or \"instance\"".into(),
    ))
}

fn session_matches(t: &Target, s: &SessionInfo) -> bool {
    match t {
        Target::Agent { agent } => &s.owner.agent == agent,
        Target::Instance { cgroup_id, .. } => s.owner.instance_id == *cgroup_id,
    }
}

/// Everything a revocation of `target` would touch, changing nothing.
pub fn impact(control: &Control, target: &Target) -> Result<Value, QueryError> {
    let sessions: Vec<SessionInfo> = control
        .proxy
        .sessions
        .list()
        .into_iter()
        .filter(|s| session_matches(target, s))
        .collect();
    let (agent, instances): (String, Vec<(String, String, u64)>) = match target {
        Target::Agent { agent } => (
            agent.clone(),
            control
                .tree
                .instances()
                .into_iter()
                .filter(|(a, _, _)| a == agent)
                .collect(),
        ),
        Target::Instance {
            agent,
            instance,
            cgroup_id,
        } => (
            agent.clone(),
            vec![(agent.clone(), instance.clone(), *cgroup_id)],
        ),
    };
    let mut connectors: Vec<String> = sessions.iter().map(|s| s.connector.clone()).collect();
    connectors.sort();
    connectors.dedup();
    let bindings: Vec<Value> = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .filter(|b| b.agent.as_deref().is_none_or(|a| a == agent))
        .filter(|b| b.agent.is_some() || connectors.contains(&b.connector))
        .map(|b| json!({ "id": b.id, "version": b.version, "connector": b.connector, "agent": b.agent }))
        .collect();
    let ids: Vec<u64> = match target {
        Target::Agent { agent } => control
            .tree
            .agents()
            .into_iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, id)| id)
            .collect(),
        Target::Instance { cgroup_id, .. } => vec![*cgroup_id],
    };
    let (agent_sockets, proxy_legs) = match KernelMaps::open(&control.pin_dir) {
        Ok(maps) => revocation::count_sockets(&maps, &ids),
        Err(_) => (0, 0),
    };
    Ok(json!({
        "target": target.to_string(),
        "already_revoked": control.revocations.load().unwrap_or_default().iter().any(|r| &r.target == target),
        "sessions": sessions,
        "instances": instances.iter().map(|(a, i, id)| json!({ "agent": a, "instance": i, "cgroup_id": id })).collect::<Vec<_>>(),
        "bindings": bindings,
        "connectors": connectors,
        "flows": { "agent_sockets": agent_sockets, "proxy_legs": proxy_legs },
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

/// Revoke: persist, deny in the kernel, destroy both legs' sockets, end the sessions, record.
pub async fn revoke(control: Arc<Control>, peer: &Peer, body: Value) -> Result<Value, QueryError> {
    let target = target_of(&control, &body)?;
    let reason = reason_of(&body)?;
    let preview = impact(&control, &target)?;
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
    let c = control.clone();
    let kill = tokio::task::spawn_blocking(move || {
        let mut maps =
            KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
        revocation::revoke(&c.tree, &c.revocations, &mut maps, rev.clone())
            .map_err(|e| QueryError::Store(e.to_string()))
            .map(|k| (k, rev))
    })
    .await
    .map_err(|e| QueryError::Store(e.to_string()))?;
    let (kill, rev) = kill?;
    let mut ended = crate::proxy::revocations::end_sessions(&control.proxy, &rev).await;
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
            action: "revoke".into(),
            target: target.to_string(),
            affected: ended.clone(),
            reason,
            result: if kill.failed == 0 { "ok" } else { "partial" }.into(),
            details: json!({ "kill": kill, "sessions_ended": ended.len(), "impact": preview }),
            mode: "daemon".into(),
            ..Default::default()
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    info!(target = %target, admin_record = %record.id, kill_us = kill.elapsed.as_micros() as u64, "revoked through the admin API");
    Ok(
        json!({ "target": target, "revoked": true, "kill": kill, "sessions_ended": ended, "admin_record": record.id }),
    )
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
    let existed = tokio::task::spawn_blocking(move || {
        let mut maps =
            KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
        revocation::reinstate(&c.tree, &c.revocations, &mut maps, &t)
            .map_err(|e| QueryError::Store(e.to_string()))
    })
    .await
    .map_err(|e| QueryError::Store(e.to_string()))??;
    let record = control
        .admin
        .append(AdminRecord {
            time: super::admin_log::now(),
            who: who(peer, &body),
            action: "reinstate".into(),
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

type SessionFilter = Box<dyn Fn(&crate::proxy::SessionHandle) -> bool + Send>;

/// End sessions at the protocol level (their MCP session ids answered 404 from now on, the
/// server's sessions closed with DELETE, the client flows closed) and, for an agent or
/// instance, in the kernel too (both legs' sockets destroyed). Reconnects are refused only
/// while a revocation stands; this alone does not revoke.
pub async fn terminate(
    control: Arc<Control>,
    peer: &Peer,
    body: Value,
) -> Result<Value, QueryError> {
    let reason = reason_of(&body)?;
    let (scope, pred): (String, SessionFilter) =
        if let Some(id) = body.get("session").and_then(Value::as_str) {
            let id = id.to_string();
            (format!("session {id}"), Box::new(move |s| s.id == id))
        } else {
            let target = target_of(&control, &body)?;
            let t = target.clone();
            (
                target.to_string(),
                Box::new(move |s| match &t {
                    Target::Agent { agent } => &s.owner.agent == agent,
                    Target::Instance { cgroup_id, .. } => s.owner.instance_id == *cgroup_id,
                }),
            )
        };
    let sessions = control.proxy.sessions.find(|s| pred(s));
    if sessions.is_empty() {
        return Err(QueryError::NotFound(format!("no live session for {scope}")));
    }
    let started = std::time::Instant::now();
    let mut deleted = 0;
    let mut ids = Vec::new();
    let mut instance_ids = Vec::new();
    let mut pids = Vec::new();
    for s in &sessions {
        ids.push(s.id.clone());
        instance_ids.push(s.owner.instance_id);
        if let Ok(dir) = control.tree.instance_dir(&s.owner.agent, &s.owner.instance) {
            pids.extend(crate::cgroups::AgentsTree::pids_under(&dir));
        }
        let protocol_ids = s.protocol_ids();
        control
            .proxy
            .terminated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(protocol_ids.iter().cloned());
        deleted += delete_upstream(s, &protocol_ids).await;
    }
    let closed = control.proxy.sessions.close_where(|s| ids.contains(&s.id));
    // The kernel side: destroy both legs' sockets of the instances concerned (a session-scoped
    // termination closes its own client flows above and leaves the instance's other sessions).
    let kill = if body.get("session").is_none() {
        let c = control.clone();
        let cgroups = instance_ids.clone();
        let k = tokio::task::spawn_blocking(move || {
            let maps =
                KernelMaps::open(&c.pin_dir).map_err(|e| QueryError::Store(e.to_string()))?;
            revocation::kill_cgroups(&maps, &cgroups, pids)
                .map_err(|e| QueryError::Store(e.to_string()))
        })
        .await
        .map_err(|e| QueryError::Store(e.to_string()))??;
        Some(k)
    } else {
        None
    };
    let elapsed_us = started.elapsed().as_micros() as u64;
    for s in &sessions {
        let r = crate::proxy::revocations::session_receipt(
            &s.info(),
            "session_terminated",
            &format!("terminated by {} (uid {}): {reason}", peer.user, peer.uid),
        );
        if let Err(e) = control.audit.append(r).await {
            tracing::warn!(error = %e, "could not record a session termination");
        }
    }
    let record = control
        .admin
        .append(AdminRecord {
            time: super::admin_log::now(),
            who: who(peer, &body),
            action: "terminate".into(),
            target: scope.clone(),
            affected: closed.clone(),
            reason,
            result: "ok".into(),
            details: json!({ "sessions": closed.len(), "upstream_deletes": deleted, "kill": kill, "elapsed_us": elapsed_us }),
            mode: "daemon".into(),
            ..Default::default()
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    info!(target = %scope, sessions = closed.len(), "sessions terminated by an admin");
    Ok(json!({
        "terminated": closed,
        "upstream_deletes": deleted,
        "kill": kill,
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
