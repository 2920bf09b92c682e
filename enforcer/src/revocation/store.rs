//! Persistent revocations: a small JSON file in the state directory, rewritten atomically
//! under an exclusive lock so the daemon and a CLI run as root never lose each other's
//! writes. It survives daemon restarts and reboots; the daemon re-applies it to the kernel
//! maps on every start.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Target {
    Agent {
        agent: String,
    },
    Instance {
        agent: String,
        instance: String,
        cgroup_id: u64,
    },
    /// Every agent process running as this user (the kernel checks the uid).
    User {
        user: String,
        uid: u32,
    },
    /// A credential binding: its secret is no longer injected; calls that need it are refused.
    Binding {
        binding: String,
    },
    /// A connector: new flows to it are refused and its sessions ended.
    Connector {
        connector: String,
    },
}

impl Target {
    /// The scope's name, as the CLI flags and metrics call it.
    pub fn scope(&self) -> &'static str {
        match self {
            Target::Agent { .. } => "agent",
            Target::Instance { .. } => "instance",
            Target::User { .. } => "user",
            Target::Binding { .. } => "binding",
            Target::Connector { .. } => "connector",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Agent { agent } => write!(f, "agent {agent}"),
            Target::Instance {
                agent,
                instance,
                cgroup_id,
            } => {
                write!(f, "instance {agent}/{instance} (cgroup {cgroup_id})")
            }
            Target::User { user, uid } => write!(f, "user {user} (uid {uid})"),
            Target::Binding { binding } => write!(f, "binding {binding}"),
            Target::Connector { connector } => write!(f, "connector {connector}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    #[serde(flatten)]
    pub target: Target,
    pub reason: String,
    pub by_uid: u32,
    pub by_user: String,
    /// RFC 3339, UTC.
    pub at: String,
}

pub struct RevocationStore {
    path: PathBuf,
}

impl RevocationStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn load(&self) -> Result<Vec<Revocation>, StoreError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Add `rev` unless the same target is already revoked; returns whether it was added.
    pub fn add(&self, rev: Revocation) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut all = self.read()?;
        if all.iter().any(|r| r.target == rev.target) {
            return Ok(false);
        }
        all.push(rev);
        self.write(&all)?;
        Ok(true)
    }

    /// Remove the revocation of `target`; returns whether there was one.
    pub fn remove(&self, target: &Target) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut all = self.read()?;
        let before = all.len();
        all.retain(|r| &r.target != target);
        if all.len() != before {
            self.write(&all)?;
        }
        Ok(all.len() != before)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<File>, StoreError> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(self.io(dir))?;
        }
        let lock_path = self.path.with_extension("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StoreError::Io {
                path: lock_path,
                source: e.into(),
            }
        })
    }

    fn read(&self) -> Result<Vec<Revocation>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) if bytes.is_empty() => Ok(Vec::new()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(&self.path)(e)),
        }
    }

    fn write(&self, all: &[Revocation]) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(self.io(&tmp))?;
        let body = serde_json::to_vec_pretty(all).expect("revocations serialize");
        f.write_all(&body).map_err(self.io(&tmp))?;
        f.sync_all().map_err(self.io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(self.io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(agent: &str) -> Revocation {
        Revocation {
            target: Target::Agent {
                agent: agent.into(),
            },
            reason: "test".into(),
            by_uid: 0,
            by_user: "root".into(),
            at: "2026-11-23T00:00:00Z".into(),
        }
    }

    #[test]
    fn add_is_idempotent_and_persists() {
        let dir = std::env::temp_dir().join(format!("enf-store-{}", std::process::id()));
        let store = RevocationStore::new(dir.join("revocations.json"));
        assert!(store.add(rev("a")).unwrap());
        assert!(!store.add(rev("a")).unwrap());
        assert!(store.add(rev("b")).unwrap());
        let again = RevocationStore::new(dir.join("revocations.json"));
        assert_eq!(again.load().unwrap().len(), 2);
        assert!(again.remove(&rev("a").target).unwrap());
        assert_eq!(store.load().unwrap(), vec![rev("b")]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_not_an_empty_list() {
        let dir = std::env::temp_dir().join(format!("enf-store-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("revocations.json"), b"{nope").unwrap();
        let err = RevocationStore::new(dir.join("revocations.json"))
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
