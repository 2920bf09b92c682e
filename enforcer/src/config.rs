//! The daemon's configuration file (TOML). Unknown keys are errors, never silently ignored.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{connectors::ConnectorConfig, credentials::BindingConfig, proxy::UnknownDestinations};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/enforcer/enforcer.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: Paths,
    pub agents: Agents,
    pub proxy: Proxy,
    pub network: Network,
    pub credentials: Credentials,
    /// MCP servers the proxy inspects.
    pub connectors: Vec<ConnectorConfig>,
    /// Which secret each connector (and optionally agent or user) gets injected.
    pub bindings: Vec<BindingConfig>,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    /// Detectors for secrets and personal data (masking results, blocking arguments).
    pub dlp: crate::dlp::DlpConfig,
    /// The Prometheus endpoint (loopback by default).
    pub metrics: crate::metrics::MetricsConfig,
    /// SIEM export of receipts and admin records: JSON lines, syslog, webhooks.
    pub export: crate::export::ExportConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// This host's environment label ("prod", "staging", "dev"): part of every decision
    /// (`context.environment` in Cedar) and of every receipt.
    pub environment: String,
    /// Cedar policy file loaded as a new version at start (and on reload) when its content
    /// differs from the active version. Empty: versions are loaded with `enforcer policy load`.
    pub file: Option<PathBuf>,
    /// "enforce", or "shadow": evaluate and record would-be denials, enforce nothing.
    pub mode: crate::gate::Mode,
    /// What a call no rule matches gets, per JSON-RPC method ("allow" or "deny").
    pub defaults: std::collections::BTreeMap<String, String>,
    /// What a call no rule matches gets for methods `defaults` does not name.
    pub default_other: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let defaults = ["tools/call", "resources/read", "prompts/get"]
            .into_iter()
            .map(|m| (m.to_string(), "deny".to_string()))
            .collect();
        Self {
            environment: "dev".into(),
            file: None,
            mode: crate::gate::Mode::Enforce,
            defaults,
            default_other: "allow".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// "window" (default): a receipt is in the store before the agent sees the answer and on
    /// disk within `flush_window_ms`; a crash can lose that window. "strict": on disk first;
    /// a crash loses no receipt of an answer the agent received.
    pub durability: Durability,
    pub flush_window_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    #[default]
    Window,
    Strict,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Window,
            flush_window_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    /// Root-only directory of secret files (mode 0600). systemd's $CREDENTIALS_DIRECTORY
    /// (LoadCredential=) takes precedence when set.
    pub dir: PathBuf,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/etc/enforcer/credentials"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Persistent state: revocations, the local CA, the audit store.
    pub state_dir: PathBuf,
    /// Runtime files: the admin socket, the daemon's pid file.
    pub runtime_dir: PathBuf,
    /// bpffs directory for pinned programs, links and maps.
    pub pin_dir: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agents {
    /// cgroup v2 directory holding `<agent>/<instance>`. Empty: a subtree of the detected
    /// cgroup2 mount (`enforcer-agents.slice` under systemd, `enforcer-agents` otherwise).
    pub cgroup_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    pub listen_v4: Ipv4Addr,
    /// IPv6 listen address; `None` makes IPv6 connects go to the IPv4-mapped proxy address.
    pub listen_v6: Option<Ipv6Addr>,
    pub port: u16,
    /// Upstream connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Flows to destinations no connector matches: "deny" (default) or "tunnel".
    pub unknown_destinations: UnknownDestinations,
    /// Largest request body accepted, bytes; larger ones get 413 with a JSON-RPC error.
    pub max_body_bytes: usize,
    /// Threads serving the proxy; 0 = one per CPU (like nginx's worker_processes).
    pub worker_threads: usize,
    /// Largest JSON response read whole for masking and receipts, bytes; a larger one is
    /// refused (502 with a JSON-RPC error) rather than passed uninspected. SSE events are
    /// inspected one by one and are bounded separately (8 MiB per event).
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Destinations agents reach without the proxy: "addr:port", or "addr" for any port.
    pub allow: Vec<String>,
    /// DNS resolvers agents may query over UDP port 53.
    pub dns_resolvers: Vec<IpAddr>,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/enforcer"),
            runtime_dir: PathBuf::from("/run/enforcer"),
            pin_dir: PathBuf::from(enforcer_common::DEFAULT_PIN_DIR),
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            listen_v4: Ipv4Addr::LOCALHOST,
            listen_v6: Some(Ipv6Addr::LOCALHOST),
            port: 15001,
            connect_timeout_ms: 5_000,
            unknown_destinations: UnknownDestinations::Deny,
            max_body_bytes: 4 * 1024 * 1024,
            worker_threads: 0,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One allowlist entry: an address and a port (0 = any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowEntry {
    pub ip: IpAddr,
    pub port: u16,
}

impl Config {
    /// Load `path`; a missing file at the default path means built-in defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG_PATH) =>
            {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.proxy.port == 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                field: "proxy.port",
                message: "must be a port number between 1 and 65535".into(),
            });
        }
        for (method, effect) in self
            .policy
            .defaults
            .iter()
            .chain([(&"(default_other)".to_string(), &self.policy.default_other)])
        {
            if effect != "allow" && effect != "deny" {
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    field: "policy.defaults",
                    message: format!("{method} = {effect:?}: use \"allow\" or \"deny\""),
                });
            }
        }
        self.allowlist().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            field: "network.allow",
            message,
        })?;
        self.metrics.validate().map_err(|e| ConfigError::Invalid {
            path: path.into(),
            field: "metrics.listen",
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// Path of the export cursors (one file per sink).
    pub fn export_dir(&self) -> PathBuf {
        self.paths.state_dir.join("export")
    }

    pub fn allowlist(&self) -> Result<Vec<AllowEntry>, String> {
        self.network
            .allow
            .iter()
            .map(|s| {
                if let Ok(sa) = s.parse::<SocketAddr>() {
                    Ok(AllowEntry {
                        ip: sa.ip(),
                        port: sa.port(),
                    })
                } else if let Ok(ip) = s.parse::<IpAddr>() {
                    Ok(AllowEntry { ip, port: 0 })
                } else {
                    Err(format!(
                        "{s:?} is not \"addr\", \"addr:port\" or \"[v6]:port\""
                    ))
                }
            })
            .collect()
    }

    pub fn proxy_v4(&self) -> SocketAddr {
        SocketAddr::new(self.proxy.listen_v4.into(), self.proxy.port)
    }

    pub fn proxy_v6(&self) -> Option<SocketAddr> {
        self.proxy
            .listen_v6
            .map(|ip| SocketAddr::new(ip.into(), self.proxy.port))
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.paths.state_dir.join("ca")
    }

    pub fn revocations_path(&self) -> PathBuf {
        self.paths.state_dir.join("revocations.json")
    }

    /// The sled store: policy versions, the admin log.
    pub fn store_dir(&self) -> PathBuf {
        self.paths.state_dir.join("store")
    }

    /// The receipts log (hash-chained JSON-lines segments).
    pub fn receipts_dir(&self) -> PathBuf {
        self.paths.state_dir.join("receipts")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.paths.runtime_dir.join("enforcer.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_complete() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.proxy.port, 15001);
        assert_eq!(c.paths.pin_dir, PathBuf::from("/sys/fs/bpf/enforcer"));
    }

    #[test]
    fn the_shipped_default_file_parses_to_the_defaults() {
        let shipped =
            Config::parse(include_str!("../dist/enforcer.toml"), Path::new("dist")).unwrap();
        let d = Config::default();
        assert_eq!(shipped.paths.state_dir, d.paths.state_dir);
        assert_eq!(shipped.paths.pin_dir, d.paths.pin_dir);
        assert_eq!(shipped.proxy.port, d.proxy.port);
        assert_eq!(shipped.proxy.listen_v6, d.proxy.listen_v6);
        assert_eq!(
            shipped.proxy.unknown_destinations,
            d.proxy.unknown_destinations
        );
        assert_eq!(shipped.proxy.max_body_bytes, d.proxy.max_body_bytes);
        assert_eq!(shipped.credentials.dir, d.credentials.dir);
        assert!(shipped.connectors.is_empty() && shipped.bindings.is_empty());
        assert_eq!(shipped.proxy.max_response_bytes, d.proxy.max_response_bytes);
        assert_eq!(shipped.policy.environment, d.policy.environment);
        assert_eq!(shipped.policy.mode, d.policy.mode);
        assert_eq!(shipped.policy.defaults, d.policy.defaults);
        assert_eq!(shipped.policy.default_other, d.policy.default_other);
        assert_eq!(shipped.audit.durability, d.audit.durability);
        assert_eq!(shipped.audit.flush_window_ms, d.audit.flush_window_ms);
        assert_eq!(shipped.dlp.arguments, d.dlp.arguments);
        assert_eq!(shipped.dlp.results, d.dlp.results);
        assert_eq!(shipped.metrics, d.metrics);
        assert!(shipped.export.jsonl.is_empty() && shipped.export.webhook.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = Config::parse("[proxy]\nport = 1\nprot = 2\n", Path::new("e.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("e.toml"), "{msg}");
        assert!(msg.contains("prot"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn connectors_and_bindings_parse() {
        let c = Config::parse(
            "[proxy]\nunknown_destinations = \"tunnel\"\n\
             [[connectors]]\nid = \"gh\"\nmatch = [\"mcp.test:443\"]\n\
             [[bindings]]\nid = \"b\"\nconnector = \"gh\"\nsecret = \"gh-token\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.proxy.unknown_destinations, UnknownDestinations::Tunnel);
        assert_eq!(c.connectors[0].id, "gh");
        assert_eq!(c.bindings[0].secret, "gh-token");
        assert!(Config::parse(
            "[[connectors]]\nid = \"x\"\nmatch = []\nbogus = 1\n",
            Path::new("d.toml")
        )
        .is_err());
    }

    #[test]
    fn allowlist_parses_and_rejects() {
        let c = Config::parse(
            "[network]\nallow = [\"10.0.0.1:5432\", \"10.0.0.2\", \"[fd00::1]:80\"]\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let a = c.allowlist().unwrap();
        assert_eq!(a[0].port, 5432);
        assert_eq!(a[1].port, 0);
        assert_eq!(a[2].ip, "fd00::1".parse::<IpAddr>().unwrap());
        assert!(Config::parse("[network]\nallow = [\"nope\"]\n", Path::new("b.toml")).is_err());
    }
}
