//! The admin log: every mutating action (revocations, reinstatements, policy loads and
//! rollbacks), who did it, on what, why, what it touched and how it went. Hash-chained like the
//! receipts (same chain code, its own sled tree). Actions taken in break-glass mode (daemon
//! down) are spooled to a file by the CLI and merged here when the daemon starts.

use std::{
    fs::OpenOptions,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{chain::Chain, AuditError, ChainRecord, VerifyReport};

pub const TREE: &str = "admin.log";

/// One admin action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminRecord {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    pub who: Who,
    /// "revoke", "reinstate", "policy_load", "policy_activate", ...
    pub action: String,
    /// "agent code-review", "instance code-review/run-2 (cgroup 1234)", "policy v3".
    pub target: String,
    /// Sessions, instances, receipts... the action touched.
    pub affected: Vec<String>,
    pub reason: String,
    /// "ok" or "failed".
    pub result: String,
    /// Counts and timings (sockets destroyed, kill microseconds, rules...).
    pub details: Value,
    /// "daemon" (through the admin API) or "break-glass" (the CLI alone, daemon down).
    pub mode: String,
}

/// Who acted: the kernel-verified uid, its name, and the sudo user the CLI reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    pub uid: u32,
    pub user: String,
    pub sudo_user: Option<String>,
}

impl ChainRecord for AdminRecord {
    fn id_for(seq: u64) -> String {
        format!("A{seq:09}")
    }
    fn set_seq_and_id(&mut self, seq: u64, id: String) {
        self.seq = seq;
        self.id = id;
    }
}

pub struct AdminLog {
    chain: Chain<AdminRecord>,
}

impl AdminLog {
    pub fn open(db: &sled::Db) -> Result<Self, AuditError> {
        Ok(Self {
            chain: Chain::open(db.open_tree(TREE)?, None)?,
        })
    }

    pub fn append(&self, record: AdminRecord) -> Result<AdminRecord, AuditError> {
        self.chain.append(record, |_| Vec::new())
    }

    /// Sequence number of the newest record (0: none).
    pub fn head_seq(&self) -> Result<u64, AuditError> {
        self.chain.len()
    }

    /// Up to `max` records after sequence number `after`, in order (export followers).
    pub fn records_after(&self, after: u64, max: usize) -> Result<Vec<AdminRecord>, AuditError> {
        let to = after.saturating_add(max as u64);
        self.chain.records_in(after + 1, to).collect()
    }

    /// Newest first, filtered by action / target substring / uid, at most `limit`.
    pub fn list(
        &self,
        action: Option<&str>,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AdminRecord>, AuditError> {
        let mut out = Vec::new();
        let len = self.chain.len()?;
        for seq in (1..=len).rev() {
            let Some(r) = self.chain.get(seq)? else {
                continue;
            };
            if action.is_some_and(|a| r.action != a)
                || target.is_some_and(|t| !r.target.contains(t))
            {
                continue;
            }
            out.push(r);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.chain.verify()
    }

    /// Merge records the CLI spooled in break-glass mode, then empty the spool.
    pub fn merge_spool(&self, spool: &Path) -> Result<usize, AuditError> {
        let Ok(text) = std::fs::read_to_string(spool) else {
            return Ok(0);
        };
        let mut merged = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<AdminRecord>(line) {
                Ok(r) => {
                    self.append(r)?;
                    merged += 1;
                }
                Err(e) => tracing::warn!(error = %e, "unreadable line in the admin spool: skipped"),
            }
        }
        std::fs::remove_file(spool).map_err(|e| AuditError::Flush(e.to_string()))?;
        Ok(merged)
    }
}

/// RFC 3339 time of an admin action.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The break-glass spool file (state directory, root only).
pub fn spool_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin-spool.jsonl")
}

/// Append one record to the spool (mode 0600).
pub fn spool(path: &Path, record: &AdminRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()
}
