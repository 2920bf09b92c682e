//! Credential bindings and the secret store. A binding maps a connector (and optionally an
//! agent or a user) to a secret kept in a root-only directory (files mode 0600, compatible
//! with systemd LoadCredential). The proxy injects it and replaces whatever the agent sent.
//! Secret values never leave this module except into the outgoing header: everything else
//! sees the credential mode and the binding reference (id and version).

use std::{
    fmt,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    pub id: String,
    pub connector: String,
    pub agent: Option<String>,
    pub user: Option<String>,
    /// File name of the secret inside the credentials directory.
    pub secret: String,
    #[serde(default)]
    pub mode: InjectMode,
    /// Header name for `mode = "header"`.
    pub header: Option<String>,
    /// Bumped by the operator when the secret is rotated; recorded with every use.
    #[serde(default = "one")]
    pub version: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectMode {
    /// `Authorization: Bearer <secret>`.
    #[default]
    Bearer,
    /// `<header>: <secret>` (API-key style), and the agent's Authorization is dropped.
    Header,
}

/// What happened to credentials on a request, for logs and receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    Inject,
    Passthrough,
    Mtls,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingRef {
    pub id: String,
    pub version: u32,
}

impl fmt::Display for BindingRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@v{}", self.id, self.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("binding {id}: connector {connector:?} does not exist")]
    UnknownConnector { id: String, connector: String },
    #[error("binding {id}: mode \"header\" needs `header = \"Name\"`")]
    MissingHeader { id: String },
    #[error("binding {id}: {message}")]
    Invalid { id: String, message: String },
    #[error("binding {id}: secret file {path}: {message}")]
    Secret {
        id: String,
        path: PathBuf,
        message: String,
    },
}

/// A secret value. Its Debug and Display never show it.
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Headers to set on the upstream request, and the header names to drop.
pub struct Injection {
    pub set: (HeaderName, HeaderValue),
    pub binding: BindingRef,
}

/// Told every secret value currently loaded, whenever one is loaded or rotated (the DLP
/// detectors use them to keep bound secrets out of results, receipts and logs).
pub type SecretsHook = Box<dyn Fn(Vec<String>) + Send + Sync>;

pub struct CredentialStore {
    dir: PathBuf,
    bindings: Vec<BindingConfig>,
    /// Secrets already read, keyed by path with the file's identity and mtime: a request
    /// costs one stat (needed for the permission check anyway), and a rotated file is re-read.
    cache: Mutex<HashMap<PathBuf, (FileStamp, Arc<Secret>)>>,
    hook: std::sync::OnceLock<SecretsHook>,
}

/// What changes when a secret file is replaced or rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

impl CredentialStore {
    /// `dir`: the credentials directory; systemd's $CREDENTIALS_DIRECTORY wins when set.
    pub fn new(
        dir: &Path,
        bindings: Vec<BindingConfig>,
        connector_ids: &[&str],
    ) -> Result<Self, CredentialError> {
        for b in &bindings {
            if !connector_ids.contains(&b.connector.as_str()) {
                return Err(CredentialError::UnknownConnector {
                    id: b.id.clone(),
                    connector: b.connector.clone(),
                });
            }
            if b.mode == InjectMode::Header {
                let Some(h) = &b.header else {
                    return Err(CredentialError::MissingHeader { id: b.id.clone() });
                };
                HeaderName::from_bytes(h.as_bytes()).map_err(|e| CredentialError::Invalid {
                    id: b.id.clone(),
                    message: format!("header {h:?}: {e}"),
                })?;
            }
            if b.secret.contains('/') || b.secret.starts_with('.') {
                return Err(CredentialError::Invalid {
                    id: b.id.clone(),
                    message: "secret must be a plain file name inside the credentials directory"
                        .into(),
                });
            }
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_path_buf());
        Ok(Self {
            dir,
            bindings,
            cache: Mutex::new(HashMap::new()),
            hook: std::sync::OnceLock::new(),
        })
    }

    pub fn bindings(&self) -> &[BindingConfig] {
        &self.bindings
    }

    pub fn on_secrets_changed(&self, hook: SecretsHook) {
        let _ = self.hook.set(hook);
    }

    /// Read every bound secret now (so the detectors know them before the first call);
    /// returns the bindings whose secret cannot be read, with why.
    pub fn preload(&self) -> Vec<(String, CredentialError)> {
        self.bindings
            .iter()
            .filter_map(|b| self.read_secret(b).err().map(|e| (b.id.clone(), e)))
            .collect()
    }

    /// The most specific binding for this connector and caller: agent and user, then agent,
    /// then user, then the connector alone.
    pub fn binding_for(&self, connector: &str, agent: &str, user: &str) -> Option<&BindingConfig> {
        let score = |b: &BindingConfig| -> Option<u8> {
            if b.connector != connector {
                return None;
            }
            let agent_ok = b.agent.as_deref().is_none_or(|a| a == agent);
            let user_ok = b.user.as_deref().is_none_or(|u| u == user);
            (agent_ok && user_ok)
                .then(|| u8::from(b.agent.is_some()) * 2 + u8::from(b.user.is_some()))
        };
        self.bindings
            .iter()
            .filter_map(|b| score(b).map(|s| (s, b)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, b)| b)
    }

    /// Read the secret and build the header to inject. Refuses secrets readable by others.
    pub fn injection(&self, b: &BindingConfig) -> Result<Injection, CredentialError> {
        let secret = self.read_secret(b)?;
        let err = |message: String| CredentialError::Invalid {
            id: b.id.clone(),
            message,
        };
        let (name, value) = match b.mode {
            InjectMode::Bearer => (
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {}", secret.0)),
            ),
            InjectMode::Header => (
                HeaderName::from_bytes(b.header.as_deref().unwrap_or_default().as_bytes())
                    .map_err(|e| err(e.to_string()))?,
                HeaderValue::from_str(&secret.0),
            ),
        };
        // The error of from_str does not contain the value; still, say nothing about it.
        let mut value = value.map_err(|_| err("the secret is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(Injection {
            set: (name, value),
            binding: BindingRef {
                id: b.id.clone(),
                version: b.version,
            },
        })
    }

    fn read_secret(&self, b: &BindingConfig) -> Result<Arc<Secret>, CredentialError> {
        let path = self.dir.join(&b.secret);
        let err = |message: String| CredentialError::Secret {
            id: b.id.clone(),
            path: path.clone(),
            message,
        };
        let meta = std::fs::metadata(&path).map_err(|e| err(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets others read it; use 0600 or 0400",
                meta.permissions().mode() & 0o777
            )));
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(err("not owned by the enforcer's user".into()));
        }
        let stamp = FileStamp {
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            len: meta.len(),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, secret)) = cache.get(&path) {
            if *cached == stamp {
                return Ok(secret.clone());
            }
        }
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(err("empty".into()));
        }
        let secret = Arc::new(Secret(value));
        cache.insert(path.clone(), (stamp, secret.clone()));
        if let Some(hook) = self.hook.get() {
            hook(cache.values().map(|(_, s)| s.0.clone()).collect());
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(id: &str, agent: Option<&str>, user: Option<&str>) -> BindingConfig {
        BindingConfig {
            id: id.into(),
            connector: "c".into(),
            agent: agent.map(Into::into),
            user: user.map(Into::into),
            secret: "s".into(),
            mode: InjectMode::Bearer,
            header: None,
            version: 1,
        }
    }

    #[test]
    fn most_specific_binding_wins() {
        let store = CredentialStore::new(
            Path::new("/nonexistent"),
            vec![
                binding("any", None, None),
                binding("agent", Some("a"), None),
                binding("both", Some("a"), Some("u")),
                binding("user", None, Some("u")),
            ],
            &["c"],
        )
        .unwrap();
        assert_eq!(store.binding_for("c", "a", "u").unwrap().id, "both");
        assert_eq!(store.binding_for("c", "a", "x").unwrap().id, "agent");
        assert_eq!(store.binding_for("c", "b", "u").unwrap().id, "user");
        assert_eq!(store.binding_for("c", "b", "x").unwrap().id, "any");
        assert!(store.binding_for("other", "a", "u").is_none());
    }

    #[test]
    fn secrets_must_be_private_and_are_never_shown() {
        let dir = std::env::temp_dir().join(format!("enf-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "canary-secret-value\n").unwrap();
        std::fs::set_permissions(dir.join("s"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = CredentialStore::new(&dir, vec![binding("b", None, None)], &["c"]).unwrap();
        let b = store.binding_for("c", "a", "u").unwrap();
        let e = store
            .injection(b)
            .err()
            .expect("world-readable refused")
            .to_string();
        assert!(e.contains("644") && !e.contains("canary"), "{e}");
        std::fs::set_permissions(dir.join("s"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let inj = store.injection(b).unwrap();
        assert_eq!(inj.set.1.to_str().unwrap(), "Bearer canary-secret-value");
        assert!(inj.set.1.is_sensitive());
        assert!(!format!("{:?}", Secret("canary".into())).contains("canary"));
        assert_eq!(inj.binding.to_string(), "b@v1");
        // A rotated secret is used from the next request on (the cache follows the file).
        std::fs::write(dir.join("s"), "rotated-secret\n").unwrap();
        let inj = store.injection(b).unwrap();
        assert_eq!(inj.set.1.to_str().unwrap(), "Bearer rotated-secret");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_unknown_connectors_and_paths() {
        assert!(
            CredentialStore::new(Path::new("/x"), vec![binding("b", None, None)], &["other"])
                .is_err()
        );
        let mut b = binding("b", None, None);
        b.secret = "../etc/shadow".into();
        assert!(CredentialStore::new(Path::new("/x"), vec![b], &["c"]).is_err());
    }
}
