//! The `[metrics]` section of the daemon's configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsConfigError {
    #[error(
        "metrics.listen: {0} is not a loopback address; the endpoint has no authentication, \
         so set metrics.allow_non_loopback = true to expose it beyond this host on purpose"
    )]
    NonLoopback(SocketAddr),
}

/// ```toml
/// [metrics]
/// enabled = true
/// listen = "127.0.0.1:9464"
/// allow_non_loopback = false
/// max_tools = 500
/// max_reason_codes = 100
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (recording for `enforcer top` happens either way).
    pub enabled: bool,
    /// Where Prometheus scrapes. Loopback only unless `allow_non_loopback`.
    pub listen: SocketAddr,
    /// Accept a non-loopback `listen`: the endpoint is unauthenticated and shows which
    /// tools are called, so this must be a deliberate choice.
    pub allow_non_loopback: bool,
    /// Distinct tool names labelled per connector; later names are counted as
    /// `tool="_other"` (0: all of them). Bounds the series a client can create by calling
    /// made-up tools.
    pub max_tools: usize,
    /// Distinct denial reason codes labelled; later ones are counted as `reason="_other"`.
    pub max_reason_codes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464),
            allow_non_loopback: false,
            max_tools: 500,
            max_reason_codes: 100,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), MetricsConfigError> {
        if self.enabled && !self.allow_non_loopback && !self.listen.ip().is_loopback() {
            return Err(MetricsConfigError::NonLoopback(self.listen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MetricsConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn defaults_are_loopback_and_valid() {
        let c = parse("").unwrap();
        assert_eq!(c, MetricsConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.validate(), Ok(()));
        assert!(parse("listen = \"[::1]:9000\"").unwrap().validate().is_ok());
    }

    #[test]
    fn non_loopback_needs_the_opt_in() {
        let c = parse("listen = \"0.0.0.0:9464\"").unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().contains("allow_non_loopback = true"),
            "{err}"
        );
        let c = parse("listen = \"10.1.2.3:9464\"\nallow_non_loopback = true").unwrap();
        assert_eq!(c.validate(), Ok(()));
        // Disabled: nothing listens, nothing to refuse.
        let c = parse("enabled = false\nlisten = \"0.0.0.0:9464\"").unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(parse("max_tool = 5").is_err());
    }
}
