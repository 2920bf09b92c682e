//! Live views of the admin API: lists and single-item details of sessions, connectors,
//! agents and bindings, joined with the revocations that stand against them. Secrets are
//! never read into a view; a binding shows its reference and whether its secret is usable.

use serde_json::{json, Value};

use super::{queries::QueryError, Control};
use crate::{
    cgroups::AgentsTree,
    revocation::{Revocation, Target},
};

fn revocations(control: &Control) -> Vec<Revocation> {
    control.revocations.load().unwrap_or_default()
}

/// The revocation standing against `target`, as shown to the operator.
fn standing(all: &[Revocation], target: impl Fn(&Target) -> bool) -> Value {
    all.iter()
        .find(|r| target(&r.target))
        .map(|r| json!({ "target": r.target.to_string(), "reason": r.reason, "by": r.by_user, "at": r.at }))
        .unwrap_or(Value::Null)
}

pub fn connectors(control: &Control) -> Value {
    let all = revocations(control);
    let list: Vec<Value> = control
        .proxy
        .connectors
        .all()
        .iter()
        .map(|c| connector_json(control, &all, c))
        .collect();
    json!({ "connectors": list })
}

fn connector_json(
    control: &Control,
    all: &[Revocation],
    c: &crate::connectors::Connector,
) -> Value {
    let sessions: Vec<String> = control
        .proxy
        .sessions
        .find(|s| s.connector == c.id)
        .iter()
        .map(|s| s.id.clone())
        .collect();
    let bindings: Vec<String> = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .filter(|b| b.connector == c.id)
        .map(|b| format!("{}@v{}", b.id, b.version))
        .collect();
    let disabled = standing(
        all,
        |t| matches!(t, Target::Connector { connector } if *connector == c.id),
    );
    json!({
        "id": c.id,
        "matches": c.match_specs(),
        "backend": c.backend.display,
        "route": c.route_name,
        "bind": c.bind,
        "server_name": c.server_name,
        "mtls": c.mtls,
        "idle_limit_ms": c.idle_timeout.as_millis() as u64,
        "credential_mode_default": if c.mtls { "mtls" } else { "none" },
        "status": c.status(),
        "state": if disabled.is_null() { "enabled" } else { "disabled" },
        "revocation": disabled,
        "sessions": sessions,
        "bindings": bindings,
    })
}

pub fn connector(control: &Control, id: &str) -> Result<Value, QueryError> {
    let c = control
        .proxy
        .connectors
        .all()
        .iter()
        .find(|c| c.id == id)
        .cloned()
        .ok_or_else(|| {
            QueryError::NotFound(format!("no connector {id:?} (see `enforcer connectors`)"))
        })?;
    Ok(connector_json(control, &revocations(control), &c))
}

pub fn bindings(control: &Control) -> Value {
    let all = revocations(control);
    let list: Vec<Value> = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .map(|b| binding_json(control, &all, b))
        .collect();
    json!({ "bindings": list })
}

fn binding_json(
    control: &Control,
    all: &[Revocation],
    b: &crate::credentials::BindingConfig,
) -> Value {
    let store = &control.proxy.credentials;
    let problem = store.injection(b).err().map(|e| e.to_string());
    let revoked = standing(
        all,
        |t| matches!(t, Target::Binding { binding } if *binding == b.id),
    );
    let sessions: Vec<String> = control
        .proxy
        .sessions
        .find(|s| {
            store
                .binding_for(&s.connector, &s.owner.agent, &s.owner.user)
                .is_some_and(|x| x.id == b.id)
        })
        .iter()
        .map(|s| s.id.clone())
        .collect();
    json!({
        "id": b.id,
        "version": b.version,
        "reference": format!("{}@v{}", b.id, b.version),
        "connector": b.connector,
        "agent": b.agent,
        "user": b.user,
        "mode": b.mode,
        "header": b.header,
        "secret_file": b.secret,
        "usable": problem.is_none() && revoked.is_null(),
        "problem": problem,
        "state": if revoked.is_null() { "active" } else { "revoked" },
        "revocation": revoked,
        "sessions": sessions,
    })
}

pub fn binding(control: &Control, id: &str) -> Result<Value, QueryError> {
    let b = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .find(|b| b.id == id)
        .ok_or_else(|| {
            QueryError::NotFound(format!("no binding {id:?} (see `enforcer bindings`)"))
        })?;
    Ok(binding_json(control, &revocations(control), b))
}

pub fn agents(control: &Control) -> Value {
    let all = revocations(control);
    let list: Vec<Value> = control
        .tree
        .agents()
        .into_iter()
        .map(|(agent, id)| agent_json(control, &all, &agent, id))
        .collect();
    json!({ "agents": list })
}

fn agent_json(control: &Control, all: &[Revocation], agent: &str, id: u64) -> Value {
    let sessions = control.proxy.sessions.list();
    let disabled = standing(
        all,
        |t| matches!(t, Target::Agent { agent: a } if a == agent),
    );
    let instances: Vec<Value> = control
        .tree
        .instances()
        .into_iter()
        .filter(|(a, _, _)| a == agent)
        .map(|(a, inst, iid)| {
            let pids = control
                .tree
                .instance_dir(&a, &inst)
                .map(|d| AgentsTree::pids_under(&d))
                .unwrap_or_default();
            let revoked = standing(all, |t| matches!(t, Target::Instance { cgroup_id, .. } if *cgroup_id == iid));
            json!({
                "instance": inst,
                "cgroup_id": iid,
                "revoked": !revoked.is_null(),
                "revocation": revoked,
                "processes": pids.len(),
                "pids": pids,
                "sessions": sessions.iter().filter(|s| s.owner.instance_id == iid).map(|s| s.id.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let bindings: Vec<String> = control
        .proxy
        .credentials
        .bindings()
        .iter()
        .filter(|b| b.agent.as_deref().is_none_or(|a| a == agent))
        .map(|b| format!("{}@v{}", b.id, b.version))
        .collect();
    json!({
        "agent": agent,
        "cgroup_id": id,
        "state": if disabled.is_null() { "enabled" } else { "disabled" },
        "revoked": !disabled.is_null(),
        "revocation": disabled,
        "instances": instances,
        "bindings": bindings,
    })
}

pub fn agent(control: &Control, name: &str) -> Result<Value, QueryError> {
    let (agent, id) = control
        .tree
        .agents()
        .into_iter()
        .find(|(a, _)| a == name)
        .ok_or_else(|| {
            QueryError::NotFound(format!("no agent {name:?} (see `enforcer agents`)"))
        })?;
    Ok(agent_json(control, &revocations(control), &agent, id))
}

/// One session: its state, the path it takes (connector, binding) and its latest receipts.
pub fn session(control: &Control, id: &str) -> Result<Value, QueryError> {
    let s = control
        .proxy
        .sessions
        .find(|s| s.id == id)
        .into_iter()
        .next()
        .ok_or_else(|| {
            QueryError::NotFound(format!("no live session {id:?} (see `enforcer sessions`)"))
        })?;
    let binding = control
        .proxy
        .credentials
        .binding_for(&s.connector, &s.owner.agent, &s.owner.user)
        .map(|b| format!("{}@v{}", b.id, b.version));
    let connector = control
        .proxy
        .connectors
        .all()
        .iter()
        .find(|c| c.id == s.connector)
        .map(|c| json!({ "id": c.id, "route": c.route_name, "backend": c.backend.display, "status": c.status() }));
    let params = [
        ("session".to_string(), id.to_string()),
        ("limit".to_string(), "10".to_string()),
    ]
    .into_iter()
    .collect();
    let recent = super::queries::search(&control.audit, &params)
        .map(|v| v["receipts"].clone())
        .unwrap_or(Value::Null);
    Ok(json!({
        "session": s.info(),
        "client": s.client(),
        "connector": connector,
        "binding": binding,
        "recent_receipts": recent,
    }))
}
