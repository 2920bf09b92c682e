//! Read-side answers of the admin API (audit search, receipts, verification, replay, policy
//! versions and diffs) as plain functions over the stores, so the CLI can compute the very
//! same answers from the store itself when the daemon is stopped.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::{
    audit::{AuditStore, Query},
    policy::PolicyVersions,
};

/// An answer the API turns into a status and a JSON error.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Store(String),
}

pub type Params = HashMap<String, String>;

pub fn parse_params(query: Option<&str>) -> Params {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A time bound: RFC 3339 ("2026-11-23T10:00:00Z"), or a duration ago ("15m", "2h", "1d").
pub fn parse_time(s: &str) -> Result<u64, QueryError> {
    let bad = || {
        QueryError::BadRequest(format!(
            "time {s:?}: use RFC 3339 (2026-11-23T10:00:00Z) or a duration ago (90s, 15m, 2h, 1d)"
        ))
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad())?
            .as_nanos() as u64);
    }
    let ago = humantime::parse_duration(s).map_err(|_| bad())?;
    let t = std::time::SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(bad)?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_nanos() as u64)
}

pub fn query_from(p: &Params) -> Result<Query, QueryError> {
    let known = [
        "user",
        "agent",
        "instance",
        "tool",
        "method",
        "session",
        "protocol_session",
        "outcome",
        "connector",
        "since",
        "until",
        "limit",
        "cursor",
    ];
    if let Some(k) = p.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(QueryError::BadRequest(format!(
            "unknown search filter {k:?} (known: {})",
            known.join(", ")
        )));
    }
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(Query {
        user: get("user"),
        agent: get("agent"),
        instance: get("instance"),
        tool: get("tool"),
        method: get("method"),
        enforcer_session: get("session"),
        protocol_session: get("protocol_session"),
        status: get("outcome"),
        connector: get("connector"),
        since: get("since").map(|s| parse_time(&s)).transpose()?,
        until: get("until").map(|s| parse_time(&s)).transpose()?,
        limit: match get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| QueryError::BadRequest(format!("limit {l:?} is not a number")))?,
            None => 0,
        },
        cursor: get("cursor"),
    })
}

fn store_err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(e.to_string())
}

pub fn search(audit: &AuditStore, p: &Params) -> Result<Value, QueryError> {
    let q = query_from(p)?;
    let page = audit.search(&q).map_err(|e| match e {
        crate::audit::AuditError::BadCursor(c) => {
            QueryError::BadRequest(format!("cursor {c:?} is not one this store issued"))
        }
        other => store_err(other),
    })?;
    Ok(json!({
        "receipts": page.receipts,
        "next_cursor": page.next_cursor,
        "scanned": page.scanned,
    }))
}

pub fn receipt(audit: &AuditStore, id: &str) -> Result<Value, QueryError> {
    match audit.get(id).map_err(store_err)? {
        Some(r) => Ok(json!({ "receipt": r })),
        None => Err(QueryError::NotFound(format!("no receipt {id}"))),
    }
}

pub fn verify(audit: &AuditStore) -> Result<Value, QueryError> {
    let report = audit.verify().map_err(store_err)?;
    Ok(json!({ "ok": report.is_ok(), "report": report }))
}

pub fn replay(audit: &AuditStore, session: &str) -> Result<Value, QueryError> {
    let receipts = audit.replay(session).map_err(store_err)?;
    if receipts.is_empty() {
        return Err(QueryError::NotFound(format!(
            "no receipts for session {session}"
        )));
    }
    Ok(json!({ "session": session, "receipts": receipts }))
}

pub fn policy_history(versions: &PolicyVersions) -> Result<Value, QueryError> {
    let active = versions.active().map_err(store_err)?.map(|(m, _)| m.id);
    Ok(json!({
        "active": active,
        "versions": versions.history().map_err(store_err)?,
        "activations": versions.activations().map_err(store_err)?,
    }))
}

pub fn policy_version(versions: &PolicyVersions, id: &str) -> Result<Value, QueryError> {
    let id = if id == "active" {
        match versions.active().map_err(store_err)? {
            Some((m, _)) => m.id,
            None => return Err(QueryError::NotFound("no policy version is active".into())),
        }
    } else {
        id.to_string()
    };
    let (meta, source) = versions
        .get(&id)
        .map_err(|e| QueryError::NotFound(format!("policy version {id}: {e}")))?;
    Ok(json!({ "version": meta, "source": source }))
}

pub fn policy_diff(versions: &PolicyVersions, from: &str, to: &str) -> Result<Value, QueryError> {
    let diff = versions
        .diff(from, to)
        .map_err(|e| QueryError::NotFound(format!("diff {from} {to}: {e}")))?;
    Ok(json!({ "from": from, "to": to, "diff": diff }))
}
