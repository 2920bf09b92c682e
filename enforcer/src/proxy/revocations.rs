//! The proxy follows revocations made by `enforcer revoke` (which persists them, updates the
//! kernel map and destroys the sockets): the revoked agent's sessions are ended at the
//! protocol level too (their upstream pools dropped, so nothing is reused), and each ended
//! session gets a `revocation_kill` receipt naming who revoked and why.

use std::{collections::HashSet, path::PathBuf, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::ProxyContext;
use crate::{
    audit::receipt::{ActorChain, ConnectionEvent, Outcome, Receipt, ReceiptKind, SessionRef},
    revocation::{Revocation, RevocationStore, Target},
    sessions::SessionInfo,
};

/// How often the revocation file is checked (a stat; read only when it changed).
const POLL: Duration = Duration::from_millis(200);

pub async fn follow(ctx: Arc<ProxyContext>, path: PathBuf) {
    let store = RevocationStore::new(path.clone());
    let mut seen: HashSet<String> = current(&store)
        .into_iter()
        .map(|r| key(&r.target))
        .collect();
    let mut stamp = modified(&path);
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let now = modified(&path);
        if now == stamp {
            continue;
        }
        stamp = now;
        let revocations = current(&store);
        for r in &revocations {
            if seen.insert(key(&r.target)) {
                end_sessions(&ctx, r).await;
            }
        }
        // Reinstated targets may be revoked again later.
        seen.retain(|k| revocations.iter().any(|r| &key(&r.target) == k));
    }
}

fn current(store: &RevocationStore) -> Vec<Revocation> {
    store.load().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the revocations");
        Vec::new()
    })
}

fn modified(path: &PathBuf) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn key(t: &Target) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn matches(t: &Target, s: &SessionInfo) -> bool {
    match t {
        Target::Agent { agent } => &s.owner.agent == agent,
        Target::Instance { cgroup_id, .. } => s.owner.instance_id == *cgroup_id,
    }
}

/// End the sessions `r` covers and record each; returns their ids.
pub async fn end_sessions(ctx: &ProxyContext, r: &Revocation) -> Vec<String> {
    let hit: Vec<SessionInfo> = ctx
        .sessions
        .list()
        .into_iter()
        .filter(|s| matches(&r.target, s))
        .collect();
    let closed = ctx.sessions.close_where(|s| match &r.target {
        Target::Agent { agent } => &s.owner.agent == agent,
        Target::Instance { cgroup_id, .. } => s.owner.instance_id == *cgroup_id,
    });
    info!(target = %r.target, sessions = closed.len(), "revocation: sessions ended");
    for s in hit {
        let receipt = kill_receipt(r, &s);
        if let Err(e) = ctx.audit.append(receipt).await {
            warn!(error = %e, session = %s.id, "could not record a revocation kill");
        }
    }
    closed
}

fn kill_receipt(r: &Revocation, s: &SessionInfo) -> Receipt {
    session_receipt(
        s,
        "revocation_kill",
        &format!(
            "{} revoked by {} (uid {}) at {}: {}",
            r.target, r.by_user, r.by_uid, r.at, r.reason
        ),
    )
}

/// A connection-level receipt for an ended session (`event`: revocation_kill,
/// session_terminated).
pub fn session_receipt(s: &SessionInfo, event: &str, detail: &str) -> Receipt {
    Receipt {
        actor: ActorChain {
            user: s.owner.user.clone(),
            agent: s.owner.agent.clone(),
            instance: s.owner.instance.clone(),
            instance_id: s.owner.instance_id,
            ..Default::default()
        },
        session: SessionRef {
            enforcer_session: s.id.clone(),
            protocol_session_id: s.protocol_session_ids.last().cloned(),
            state: "terminated".into(),
            idle_limit_ms: s.idle_limit_ms,
            ..Default::default()
        },
        connector: crate::audit::receipt::ConnectorPath {
            connector: s.connector.clone(),
            ..Default::default()
        },
        outcome: Outcome {
            status: "killed".into(),
            error: Some(detail.to_string()),
            ..Default::default()
        },
        event: Some(ConnectionEvent {
            event: event.into(),
            detail: Some(detail.to_string()),
            ..Default::default()
        }),
        ..Receipt::stamped(ReceiptKind::Connection)
    }
}
