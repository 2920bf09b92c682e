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
        at: crate::cli::now_rfc3339(),
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
    let ended = crate::proxy::revocations::end_sessions(&control.proxy, &rev).await;
    let record = control
        .admin
        .append(AdminRecord {
            time: crate::cli::now_rfc3339(),
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
            time: crate::cli::now_rfc3339(),
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
        time: crate::cli::now_rfc3339(),
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
