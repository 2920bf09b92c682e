//! Versioned policy storage in sled.
//!
//! Trees: `policy_versions` (u64 big-endian number -> JSON [`VersionMeta`]),
//! `policy_sources` (number -> source text), `policy_state` (`"active"` ->
//! number, `"next"` -> next number), `policy_activations` (u64 sequence -> JSON [`Activation`]).
//! Versions are immutable; loading and activation are single transactions.

use super::compile::Policy;
use super::error::Error;
use super::source::scan_statements;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::BTreeMap;
use std::time::SystemTime;

pub const TREE_VERSIONS: &str = "policy_versions";
pub const TREE_SOURCES: &str = "policy_sources";
pub const TREE_STATE: &str = "policy_state";
pub const TREE_ACTIVATIONS: &str = "policy_activations";
const ACTIVE_KEY: &[u8] = b"active";
const NEXT_KEY: &[u8] = b"next";

/// Metadata of one stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// "v<number>".
    pub id: String,
    pub number: u64,
    pub hash: String,
    pub loaded_by: String,
    /// RFC 3339, UTC.
    pub loaded_at: String,
    pub file_name: String,
    /// Number of rules.
    pub rules: usize,
    /// Set when the text was identical to the version active at load time.
    pub same_as: Option<String>,
}

/// One activation (load or rollback) in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub version: String,
    pub by: String,
    pub at: String,
    /// "load" or "activate".
    pub kind: String,
}

/// Differences between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    /// Ids present in both whose text differs.
    pub rules_changed: Vec<String>,
    /// Unified text diff of the sources.
    pub unified: String,
}

/// Handle on the policy trees of a sled database.
#[derive(Clone)]
pub struct PolicyVersions {
    versions: sled::Tree,
    sources: sled::Tree,
    state: sled::Tree,
    activations: sled::Tree,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn parse_number(id: &str) -> Result<u64, Error> {
    id.strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

fn tx_err(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::Store(e),
    }
}

/// Rule id -> statement text (trimmed), from the `@id` annotations.
fn rule_texts(src: &str) -> BTreeMap<String, String> {
    scan_statements(src)
        .into_iter()
        .filter_map(|st| {
            let text = st.text(src);
            let a = st.annotations.iter().find(|a| a.key == "id")?;
            let rest = &src[a.offset + 3..st.end];
            let rest = rest
                .trim_start()
                .strip_prefix('(')?
                .trim_start()
                .strip_prefix('"')?;
            let id = &rest[..rest.find('"')?];
            Some((id.to_string(), text.trim().to_string()))
        })
        .collect()
}

impl PolicyVersions {
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Ok(PolicyVersions {
            versions: db.open_tree(TREE_VERSIONS)?,
            sources: db.open_tree(TREE_SOURCES)?,
            state: db.open_tree(TREE_STATE)?,
            activations: db.open_tree(TREE_ACTIVATIONS)?,
        })
    }

    /// Compile `source`; if it is valid, store it as a new version and make
    /// it active. A refused policy changes nothing.
    #[cfg(test)]
    pub fn load(
        &self,
        source: &str,
        file_name: &str,
        loaded_by: &str,
    ) -> Result<VersionMeta, Error> {
        let policy = Policy::compile(source, file_name)?;
        self.store(&policy, loaded_by)
    }

    /// Store an already compiled policy (e.g. compiled with custom detectors).
    pub fn store(&self, policy: &Policy, loaded_by: &str) -> Result<VersionMeta, Error> {
        let at = now_rfc3339();
        let res = (
            &self.versions,
            &self.sources,
            &self.state,
            &self.activations,
        )
            .transaction(|(versions, sources, state, acts)| {
                let abort = |e: Error| ConflictableTransactionError::Abort(e);
                let active = state.get(ACTIVE_KEY)?;
                let mut same_as = None;
                if let Some(a) = &active {
                    if let Some(raw) = versions.get(a)? {
                        let m: VersionMeta =
                            serde_json::from_slice(&raw).map_err(|e| abort(e.into()))?;
                        if m.hash == policy.hash() {
                            same_as = Some(m.id);
                        }
                    }
                }
                // Highest number + 1; the versions tree is keyed big-endian.
                // A counter in the state tree (reading `versions` outside the
                // transaction would deadlock).
                let number = match state.get(NEXT_KEY)? {
                    Some(k) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                    None => 1,
                };
                state.insert(NEXT_KEY, &(number + 1).to_be_bytes())?;
                let meta = VersionMeta {
                    id: format!("v{number}"),
                    number,
                    hash: policy.hash().to_string(),
                    loaded_by: loaded_by.to_string(),
                    loaded_at: at.clone(),
                    file_name: policy.file_name().to_string(),
                    rules: policy.rules().len(),
                    same_as,
                };
                let key = number.to_be_bytes();
                let json = serde_json::to_vec(&meta).map_err(|e| abort(e.into()))?;
                versions.insert(&key, json)?;
                sources.insert(&key, policy.source().as_bytes())?;
                state.insert(ACTIVE_KEY, &key)?;
                let act = Activation {
                    version: meta.id.clone(),
                    by: loaded_by.to_string(),
                    at: at.clone(),
                    kind: "load".into(),
                };
                let seq = acts.generate_id()?;
                let act = serde_json::to_vec(&act).map_err(|e| abort(e.into()))?;
                acts.insert(&seq.to_be_bytes(), act)?;
                Ok(meta)
            });
        let meta = res.map_err(tx_err)?;
        self.versions.flush()?;
        Ok(meta)
    }

    fn meta(&self, number: u64) -> Result<Option<VersionMeta>, Error> {
        match self.versions.get(number.to_be_bytes())? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw)?)),
            None => Ok(None),
        }
    }

    /// A stored version and its source.
    pub fn get(&self, id: &str) -> Result<(VersionMeta, String), Error> {
        let n = parse_number(id)?;
        let meta = self
            .meta(n)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let src = self
            .sources
            .get(n.to_be_bytes())?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok((meta, String::from_utf8_lossy(&src).into_owned()))
    }

    /// The active version and its source, if any was loaded.
    pub fn active(&self) -> Result<Option<(VersionMeta, String)>, Error> {
        match self.state.get(ACTIVE_KEY)? {
            Some(k) => {
                let n = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                self.get(&format!("v{n}")).map(Some)
            }
            None => Ok(None),
        }
    }

    /// All versions, newest first.
    pub fn history(&self) -> Result<Vec<VersionMeta>, Error> {
        self.versions
            .iter()
            .rev()
            .map(|r| {
                let (_, v) = r?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }

    /// Activations (loads and rollbacks), newest first.
    pub fn activations(&self) -> Result<Vec<Activation>, Error> {
        self.activations
            .iter()
            .rev()
            .map(|r| {
                let (_, v) = r?;
                Ok(serde_json::from_slice(&v)?)
            })
            .collect()
    }

    /// Make a stored version active again (rollback). The stored source is
    /// recompiled first, so a version that no longer compiles is refused.
    pub fn activate(&self, id: &str, by: &str) -> Result<(VersionMeta, Policy), Error> {
        let (meta, src) = self.get(id)?;
        let policy = Policy::compile(&src, &meta.file_name)?;
        let act = Activation {
            version: meta.id.clone(),
            by: by.to_string(),
            at: now_rfc3339(),
            kind: "activate".into(),
        };
        let act = serde_json::to_vec(&act)?;
        (&self.state, &self.activations)
            .transaction(|(state, acts)| {
                state.insert(ACTIVE_KEY, &meta.number.to_be_bytes())?;
                let seq = acts.generate_id()?;
                acts.insert(&seq.to_be_bytes(), act.clone())?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(tx_err)?;
        self.state.flush()?;
        Ok((meta, policy))
    }

    /// Compare two stored versions.
    pub fn diff(&self, from: &str, to: &str) -> Result<PolicyDiff, Error> {
        let (_, a) = self.get(from)?;
        let (_, b) = self.get(to)?;
        Ok(diff_sources(&a, &b, from, to))
    }
}

/// Compare two policy texts rule by rule (by `@id`) and line by line.
pub fn diff_sources(a: &str, b: &str, a_name: &str, b_name: &str) -> PolicyDiff {
    let ra = rule_texts(a);
    let rb = rule_texts(b);
    let unified = similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(a_name, b_name)
        .to_string();
    PolicyDiff {
        rules_added: rb
            .keys()
            .filter(|k| !ra.contains_key(*k))
            .cloned()
            .collect(),
        rules_removed: ra
            .keys()
            .filter(|k| !rb.contains_key(*k))
            .cloned()
            .collect(),
        rules_changed: ra
            .iter()
            .filter(|(k, v)| rb.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| k.clone())
            .collect(),
        unified,
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile::hash_source;
    use super::*;

    const V1: &str = "@id(\"a\") permit(principal, action, resource);\n@id(\"b\") forbid(principal, action, resource) when { context.environment == \"dev\" };\n";
    const V2: &str = "@id(\"a\") permit(principal, action, resource);\n@id(\"b\") forbid(principal, action, resource) when { context.environment == \"prod\" };\n@id(\"c\") permit(principal in Agent::\"x\", action, resource);\n";

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().expect("temp db")
    }

    #[test]
    fn load_history_get_activate_diff() {
        let db = db();
        let pv = PolicyVersions::open(&db).unwrap();
        assert!(pv.active().unwrap().is_none());
        let m1 = pv.load(V1, "p.cedar", "alice").unwrap();
        assert_eq!(
            (m1.id.as_str(), m1.rules, m1.same_as.clone()),
            ("v1", 2, None)
        );
        let m2 = pv.load(V2, "p.cedar", "bob").unwrap();
        assert_eq!((m2.id.as_str(), m2.rules), ("v2", 3));
        assert_eq!(pv.active().unwrap().unwrap().0.id, "v2");

        // A bad policy is refused and nothing changes.
        let err = pv.load("permit(principal, action, resource);", "bad.cedar", "eve");
        assert!(matches!(err, Err(Error::Check(_))));
        assert_eq!(pv.history().unwrap().len(), 2);
        assert_eq!(pv.active().unwrap().unwrap().0.id, "v2");

        // Same text as the active one: new version, same_as set.
        let m3 = pv.load(V2, "p.cedar", "bob").unwrap();
        assert_eq!((m3.id.as_str(), m3.same_as.as_deref()), ("v3", Some("v2")));

        let ids: Vec<_> = pv.history().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec!["v3", "v2", "v1"]);
        let (g, src) = pv.get("v1").unwrap();
        assert_eq!((g.loaded_by.as_str(), src.as_str()), ("alice", V1));
        assert!(g.loaded_at.ends_with('Z') && g.hash == hash_source(V1));
        assert!(matches!(pv.get("v9"), Err(Error::NotFound(_))));
        assert!(matches!(pv.get("nope"), Err(Error::NotFound(_))));

        let (am, policy) = pv.activate("v1", "carol").unwrap();
        assert_eq!((am.id.as_str(), policy.rules().len()), ("v1", 2));
        assert_eq!(pv.active().unwrap().unwrap().1, V1);
        let acts = pv.activations().unwrap();
        assert_eq!(
            (
                acts[0].version.as_str(),
                acts[0].by.as_str(),
                acts[0].kind.as_str()
            ),
            ("v1", "carol", "activate")
        );
        assert_eq!(acts.len(), 4);

        let d = pv.diff("v1", "v2").unwrap();
        assert_eq!(d.rules_added, vec!["c"]);
        assert!(d.rules_removed.is_empty());
        assert_eq!(d.rules_changed, vec!["b"]);
        assert!(
            d.unified.contains("--- v1") && d.unified.contains("+@id(\"c\")"),
            "{}",
            d.unified
        );
        let back = pv.diff("v2", "v1").unwrap();
        assert_eq!(back.rules_removed, vec!["c"]);
    }

    #[test]
    fn versions_persist_across_reopen() {
        let dir = std::env::temp_dir().join(format!("policy-versions-test-{}", std::process::id()));
        {
            let db = sled::open(&dir).unwrap();
            PolicyVersions::open(&db)
                .unwrap()
                .load(V1, "p.cedar", "a")
                .unwrap();
        }
        let db = sled::open(&dir).unwrap();
        let pv = PolicyVersions::open(&db).unwrap();
        assert_eq!(pv.active().unwrap().unwrap().0.id, "v1");
        drop(pv);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
