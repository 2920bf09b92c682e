//! Connectors: which destinations the proxy inspects, and how it reaches their backend.
//! A connector matches an agent's flow by SNI and port, or by destination address and port;
//! it names the backend (default: the original destination), the route, upstream TLS
//! settings and idle limits. Route status (reachable, last error, last latency) is tracked.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::tls::{self, UpstreamTlsSettings};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub id: String,
    /// "host:port", "*.domain:port" or "addr:port" (IPv6 as "[addr]:port").
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Backend URL, e.g. "https://mcp.internal:8443". Default: the original destination,
    /// with TLS when the agent spoke TLS.
    pub backend: Option<String>,
    #[serde(default)]
    pub route: RouteConfig,
    #[serde(default)]
    pub tls: ConnectorTlsConfig,
    /// Idle limit for sessions on this connector, seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
}

fn default_idle() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub name: String,
    /// Source address for upstream connections.
    pub bind: Option<IpAddr>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: "direct".into(),
            bind: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorTlsConfig {
    /// Extra CA (PEM) trusted for this backend, beside the system roots.
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// SNI and verified name toward the backend. Default: the agent's SNI, else the backend host.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector {id}: match {value:?} is not \"host:port\" or \"addr:port\"")]
    BadMatch { id: String, value: String },
    #[error("connector {id}: backend {value:?} must be an http:// or https:// URL with a host")]
    BadBackend { id: String, value: String },
    #[error("connector {id}: both tls.client_cert and tls.client_key are needed")]
    HalfClientCert { id: String },
    #[error("connector {id}: duplicate connector id")]
    Duplicate { id: String },
    #[error("connector {id}: {source}")]
    Tls { id: String, source: tls::TlsError },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// "*.example.com" stored as ".example.com".
    Suffix(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MatchKey {
    host: Host,
    port: u16,
}

fn parse_match(s: &str) -> Option<MatchKey> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(MatchKey {
            host: Host::Addr(sa.ip()),
            port: sa.port(),
        });
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.to_ascii_lowercase();
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some(MatchKey {
        host: match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => Host::Suffix(suffix.to_string()),
            _ => Host::Exact(host),
        },
        port,
    })
}

/// Whether upstream traffic is TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    Https,
    Http,
    /// Whatever the agent spoke.
    SameAsAgent,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub scheme: Scheme,
    /// None: the agent's original destination.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub display: String,
}

/// Route status of a connector, as last observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteStatus {
    pub reachable: Option<bool>,
    pub last_error: Option<String>,
    pub last_latency_us: Option<u64>,
}

pub struct Connector {
    pub id: String,
    matches: Vec<MatchKey>,
    pub backend: Backend,
    pub route_name: String,
    pub bind: Option<IpAddr>,
    pub tls: Arc<ClientConfig>,
    pub server_name: Option<String>,
    pub mtls: bool,
    pub idle_timeout: Duration,
    status: Mutex<RouteStatus>,
}

impl Connector {
    fn matches(&self, sni: Option<&str>, dest: SocketAddr) -> bool {
        self.matches.iter().any(|m| {
            m.port == dest.port()
                && match (&m.host, sni) {
                    (Host::Addr(ip), _) => *ip == dest.ip(),
                    (Host::Exact(h), Some(sni)) => h.eq_ignore_ascii_case(sni),
                    (Host::Suffix(s), Some(sni)) => sni.to_ascii_lowercase().ends_with(s.as_str()),
                    _ => false,
                }
        })
    }

    /// What the connector matches, as configured ("host:port", "*.suffix:port", "ip:port").
    pub fn match_specs(&self) -> Vec<String> {
        self.matches
            .iter()
            .map(|m| match &m.host {
                Host::Exact(h) => format!("{h}:{}", m.port),
                Host::Suffix(s) => format!("*{s}:{}", m.port),
                Host::Addr(ip) => SocketAddr::new(*ip, m.port).to_string(),
            })
            .collect()
    }

    pub fn status(&self) -> RouteStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn record_ok(&self, latency: Duration) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.reachable = Some(true);
        s.last_latency_us = Some(latency.as_micros() as u64);
    }

    pub fn record_error(&self, error: &str) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.reachable = Some(false);
        s.last_error = Some(error.to_string());
    }
}

pub struct Connectors {
    list: Vec<Arc<Connector>>,
}

impl Connectors {
    pub fn build(configs: &[ConnectorConfig]) -> Result<Self, ConnectorError> {
        let mut list: Vec<Arc<Connector>> = Vec::new();
        for c in configs {
            if list.iter().any(|x| x.id == c.id) {
                return Err(ConnectorError::Duplicate { id: c.id.clone() });
            }
            list.push(Arc::new(build_one(c)?));
        }
        Ok(Self { list })
    }

    /// Could any connector match a flow to `dest`, whatever its SNI? When none can, the flow
    /// is decided without waiting for the client to speak (server-first protocols would
    /// otherwise wait for each other).
    pub fn may_match(&self, dest: SocketAddr) -> bool {
        self.list.iter().any(|c| {
            c.matches.iter().any(|m| {
                m.port == dest.port()
                    && match &m.host {
                        Host::Addr(ip) => *ip == dest.ip(),
                        Host::Exact(_) | Host::Suffix(_) => true,
                    }
            })
        })
    }

    /// The first connector matching this flow.
    pub fn find(&self, sni: Option<&str>, dest: SocketAddr) -> Option<Arc<Connector>> {
        self.list.iter().find(|c| c.matches(sni, dest)).cloned()
    }

    pub fn all(&self) -> &[Arc<Connector>] {
        &self.list
    }
}

fn build_one(c: &ConnectorConfig) -> Result<Connector, ConnectorError> {
    let matches = c
        .matches
        .iter()
        .map(|m| {
            parse_match(m).ok_or_else(|| ConnectorError::BadMatch {
                id: c.id.clone(),
                value: m.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let backend = match &c.backend {
        None => Backend {
            scheme: Scheme::SameAsAgent,
            host: None,
            port: None,
            display: "original destination".into(),
        },
        Some(url) => parse_backend(url).ok_or_else(|| ConnectorError::BadBackend {
            id: c.id.clone(),
            value: url.clone(),
        })?,
    };
    if c.tls.client_cert.is_some() != c.tls.client_key.is_some() {
        return Err(ConnectorError::HalfClientCert { id: c.id.clone() });
    }
    let tls = tls::upstream_config(&UpstreamTlsSettings {
        extra_ca: c.tls.ca.as_deref(),
        client_cert: c.tls.client_cert.as_deref(),
        client_key: c.tls.client_key.as_deref(),
    })
    .map_err(|source| ConnectorError::Tls {
        id: c.id.clone(),
        source,
    })?;
    Ok(Connector {
        id: c.id.clone(),
        matches,
        backend,
        route_name: c.route.name.clone(),
        bind: c.route.bind,
        tls,
        server_name: c.tls.server_name.clone(),
        mtls: c.tls.client_cert.is_some(),
        idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
        status: Mutex::new(RouteStatus::default()),
    })
}

fn parse_backend(url: &str) -> Option<Backend> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = match uri.scheme_str()? {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return None,
    };
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == Scheme::Https { 443 } else { 80 });
    Some(Backend {
        scheme,
        host: Some(host),
        port: Some(port),
        display: url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connectors(toml_text: &str) -> Connectors {
        #[derive(Deserialize)]
        struct C {
            connectors: Vec<ConnectorConfig>,
        }
        let c: C = toml::from_str(toml_text).unwrap();
        Connectors::build(&c.connectors).unwrap()
    }

    #[test]
    fn matches_by_sni_wildcard_and_address() {
        let c = connectors(
            r#"
            [[connectors]]
            id = "gh"
            match = ["mcp.github.test:443", "*.tools.test:8443"]
            [[connectors]]
            id = "local"
            match = ["10.0.0.7:9000", "[fd00::7]:9000"]
            backend = "http://10.0.0.7:9000"
            "#,
        );
        let d443: SocketAddr = "192.0.2.1:443".parse().unwrap();
        assert_eq!(c.find(Some("MCP.github.test"), d443).unwrap().id, "gh");
        assert!(c
            .find(Some("mcp.github.test"), "192.0.2.1:444".parse().unwrap())
            .is_none());
        assert_eq!(
            c.find(Some("a.tools.test"), "192.0.2.1:8443".parse().unwrap())
                .unwrap()
                .id,
            "gh"
        );
        assert!(c
            .find(Some("tools.test"), "192.0.2.1:8443".parse().unwrap())
            .is_none());
        assert_eq!(
            c.find(None, "10.0.0.7:9000".parse().unwrap()).unwrap().id,
            "local"
        );
        assert_eq!(
            c.find(None, "[fd00::7]:9000".parse().unwrap()).unwrap().id,
            "local"
        );
        assert!(c.find(None, d443).is_none());
        assert!(
            c.may_match(d443),
            "any address on 443 may carry SNI mcp.github.test"
        );
        assert!(!c.may_match("10.0.0.8:9000".parse().unwrap()));
        assert!(!c.may_match("192.0.2.1:22".parse().unwrap()));
        assert_eq!(
            c.find(None, "10.0.0.7:9000".parse().unwrap())
                .unwrap()
                .backend
                .scheme,
            Scheme::Http
        );
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "[[connectors]]\nid = \"x\"\nmatch = [\"nohost\"]\n",
            "[[connectors]]\nid = \"x\"\nmatch = [\"a:1\"]\nbackend = \"ftp://a\"\n",
            "[[connectors]]\nid = \"x\"\nmatch = [\"a:1\"]\n[[connectors]]\nid = \"x\"\nmatch = [\"b:1\"]\n",
        ] {
            #[derive(Deserialize)]
            struct C {
                connectors: Vec<ConnectorConfig>,
            }
            let c: C = toml::from_str(bad).unwrap();
            assert!(Connectors::build(&c.connectors).is_err(), "{bad}");
        }
    }
}
