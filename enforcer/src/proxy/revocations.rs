//! The proxy follows revocations (made through the admin API, or by a break-glass CLI that
//! wrote the file): the target's sessions are ended at the protocol level (in-flight calls
//! answered with an error, upstream pools dropped so nothing is reused), each ended session
//! gets a `revocation_kill` receipt naming who revoked and why, and revoked bindings and
//! connectors join the set the proxy refuses.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tracing::{info, warn};

use super::{ProxyContext, SessionHandle};
use crate::{
    audit::receipt::{ActorChain, ConnectionEvent, Outcome, Receipt, ReceiptKind, SessionRef},
    revocation::{Revocation, RevocationStore, Target},
    sessions::{CloseReason, SessionInfo},
};

/// How often the revocation file is checked (a stat; read only when it changed).
const POLL: Duration = Duration::from_millis(200);

/// Bindings and connectors under revocation (the kernel cannot see them): id -> why.
#[derive(Debug, Default)]
pub struct Blocked {
    pub bindings: HashMap<String, String>,
    pub connectors: HashMap<String, String>,
}

impl Blocked {
    pub fn from(revocations: &[Revocation]) -> Self {
        let mut b = Blocked::default();
        for r in revocations {
            let why = format!("revoked by {} at {}: {}", r.by_user, r.at, r.reason);
            match &r.target {
                Target::Binding { binding } => {
                    b.bindings.insert(binding.clone(), why);
                }
                Target::Connector { connector } => {
                    b.connectors.insert(connector.clone(), why);
                }
                _ => {}
            }
        }
        b
    }
}

/// Re-read the revocations into the proxy's blocked set.
pub fn refresh_blocked(ctx: &ProxyContext, revocations: &[Revocation]) {
    ctx.blocked.store(Arc::new(Blocked::from(revocations)));
}

pub async fn follow(ctx: Arc<ProxyContext>, path: PathBuf) {
    let store = RevocationStore::new(path.clone());
    refresh_blocked(&ctx, &current(&store));
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
        refresh_blocked(&ctx, &revocations);
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

/// Does a revocation of `t` cover session `s`?
pub fn covers(ctx: &ProxyContext, t: &Target, s: &SessionHandle) -> bool {
    match t {
        Target::Agent { agent } => &s.owner.agent == agent,
        Target::Instance { cgroup_id, .. } => s.owner.instance_id == *cgroup_id,
        Target::User { user, .. } => &s.owner.user == user,
        Target::Connector { connector } => &s.connector == connector,
        Target::Binding { binding } => ctx
            .credentials
            .binding_for(&s.connector, &s.owner.agent, &s.owner.user)
            .is_some_and(|b| &b.id == binding),
    }
}

/// End the sessions `r` covers (in-flight calls get a `revoked` error) and record each;
/// returns their ids.
pub async fn end_sessions(ctx: &ProxyContext, r: &Revocation) -> Vec<String> {
    let hit: Vec<SessionInfo> = ctx
        .sessions
        .find(|s| covers(ctx, &r.target, s))
        .iter()
        .map(|s| s.info())
        .collect();
    let reason = CloseReason::new(
        "revoked",
        format!("{} was revoked by an administrator: {}", r.target, r.reason),
    );
    let closed = ctx
        .sessions
        .close_where(|s| covers(ctx, &r.target, s), &reason);
    info!(target = %r.target, sessions = closed.len(), "revocation: sessions ended");
    for s in hit {
        let receipt = kill_receipt(r, &s);
        if let Err(e) = ctx.record(receipt).await {
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
            user: s.owner.user.as_str().into(),
            agent: s.owner.agent.as_str().into(),
            instance: s.owner.instance.as_str().into(),
            instance_id: s.owner.instance_id,
            ..Default::default()
        },
        session: SessionRef {
            enforcer_session: s.id.as_str().into(),
            protocol_session_id: s.protocol_session_ids.last().map(Into::into),
            state: "terminated".into(),
            idle_limit_ms: s.idle_limit_ms,
            ..Default::default()
        },
        connector: crate::audit::receipt::ConnectorPath {
            connector: s.connector.as_str().into(),
            ..Default::default()
        },
        outcome: Outcome {
            status: "killed".into(),
            error: Some(detail.into()),
            ..Default::default()
        },
        event: Some(ConnectionEvent {
            event: event.into(),
            detail: Some(detail.into()),
            ..Default::default()
        }),
        ..Receipt::stamped(ReceiptKind::Connection)
    }
}
