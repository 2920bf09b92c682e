//! The metric families, their registration, and the recording calls the proxy makes on
//! its hot path. A recording call is two shared-lock hash lookups (connector, tool) and
//! atomic adds (the `calls` counters are cached on the tool's series); it allocates only the
//! first time a series appears.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{
    bounded::BoundedLabels,
    config::MetricsConfig,
    histogram::{self, Histogram},
    kernel::{KernelSlot, KernelSource},
    labels::{
        method_label, CallLabels, DenialLabels, DetectorLabels, DlpAction, ErrorLabels, Outcome,
        RevocationScope, ScopeLabels, ToolLabels, VersionLabels,
    },
};

/// Connectors come from the daemon's config, but the cap keeps a caller bug from turning
/// into unbounded series.
const MAX_CONNECTORS: usize = 256;
/// Built-in plus custom DLP detectors; the same reasoning.
const MAX_DETECTORS: usize = 128;

/// Label for a denial without a reason code.
const NO_REASON: &str = "_none";

/// One finished MCP request, as the proxy saw it. Strings are borrowed: they are only
/// looked up (and copied once, when a series is new).
#[derive(Debug, Clone, Copy)]
pub struct CallObservation<'a> {
    /// Configured connector name.
    pub connector: &'a str,
    /// Tool name for `tools/call`; `None` for other methods, which are then labelled
    /// `tool=<method>`. Names past `max_tools` for this connector become `_other`.
    pub tool: Option<&'a str>,
    /// JSON-RPC method; unknown methods are labelled `_other`.
    pub method: &'a str,
    pub outcome: Outcome,
    /// Policy reason code, used for [`Outcome::Denied`] (capped by `max_reason_codes`).
    pub reason_code: Option<&'a str>,
    /// Request received to response sent.
    pub latency: Duration,
    /// Request bytes received from the agent.
    pub bytes_in: u64,
    /// Response bytes sent back to the agent.
    pub bytes_out: u64,
}

/// All of the daemon's metrics. `Send + Sync`; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(super) version: String,
    max_tools: usize,
    pub(super) connectors: BoundedLabels<Arc<ConnectorSeries>>,
    reasons: BoundedLabels<Arc<str>>,
    pub(super) detectors: BoundedLabels<Arc<str>>,
    pub(super) calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    dlp_blocks: Family<DetectorLabels, Counter>,
    pub(super) dlp_redactions: Family<DetectorLabels, Counter>,
    bytes_in: Family<ToolLabels, Counter>,
    bytes_out: Family<ToolLabels, Counter>,
    pub(super) live_sessions: Gauge,
    session_duration: Histogram,
    session_calls: Histogram,
    session_tools: Histogram,
    pub(super) revocations: Family<ScopeLabels, Counter>,
    kill_latency: Histogram,
    pub(super) flows_killed: Counter,
    audit_write: Histogram,
    pub(super) kernel: KernelSlot,
}

#[derive(Debug)]
pub(super) struct ConnectorSeries {
    name: Arc<str>,
    pub(super) tools: BoundedLabels<Arc<ToolSeries>>,
}

/// Handles of one (connector, tool)'s series, resolved once so a call skips those lookups.
#[derive(Debug)]
pub(super) struct ToolSeries {
    pub(super) labels: ToolLabels,
    pub(super) latency: Histogram,
    pub(super) bytes_in: Counter,
    pub(super) bytes_out: Counter,
    pub(super) tool_errors: Counter,
    pub(super) transport_errors: Counter,
    /// Bit mask of the method labels seen (see `labels::methods_in`), so a snapshot knows
    /// which `calls` series exist without scanning the family.
    pub(super) methods: AtomicU64,
    /// The `calls` counters of the first method this series saw, one per outcome: a series
    /// nearly always sees one method (a tool's is `tools/call`; a method's own series sees
    /// only that method), and a call then skips the family's hashed lookup of four labels.
    calls: std::sync::OnceLock<(usize, [std::sync::OnceLock<Counter>; Outcome::ALL.len()])>,
}

impl Metrics {
    /// Registers every family under the `enforcer_` prefix. Only `max_tools` and
    /// `max_reason_codes` are read from `config`.
    pub fn new(version: &str, config: &MetricsConfig) -> Arc<Self> {
        let mut m = Self {
            registry: Registry::with_prefix("enforcer"),
            version: version.to_owned(),
            max_tools: config.max_tools,
            connectors: BoundedLabels::new(MAX_CONNECTORS),
            reasons: BoundedLabels::new(config.max_reason_codes),
            detectors: BoundedLabels::new(MAX_DETECTORS),
            calls: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(histogram::CALL_LATENCY)),
            errors: Family::default(),
            denials: Family::default(),
            dlp_blocks: Family::default(),
            dlp_redactions: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            live_sessions: Gauge::default(),
            session_duration: Histogram::new(histogram::SESSION_DURATION),
            session_calls: Histogram::new(histogram::SESSION_CALLS),
            session_tools: Histogram::new(histogram::SESSION_TOOLS),
            revocations: Family::default(),
            kill_latency: Histogram::new(histogram::KILL_LATENCY),
            flows_killed: Counter::default(),
            audit_write: Histogram::new(histogram::AUDIT_WRITE),
            kernel: KernelSlot::default(),
        };
        // Families are handles: the registry's clones share the series recorded here.
        let r = &mut m.registry;
        r.register(
            "tool_calls",
            "MCP requests by connector, tool, method and outcome",
            m.calls.clone(),
        );
        r.register_with_unit(
            "tool_call_duration",
            "Latency of requests that reached the server, by connector and tool",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register(
            "tool_errors",
            "Failed requests by connector and tool: kind=tool (isError or JSON-RPC error \
             from the server) or kind=transport (upstream connect, TLS or HTTP failure)",
            m.errors.clone(),
        );
        r.register(
            "denials",
            "Requests denied by policy, by connector, tool and reason code",
            m.denials.clone(),
        );
        r.register(
            "dlp_blocks",
            "Messages blocked by a DLP detector",
            m.dlp_blocks.clone(),
        );
        r.register(
            "dlp_redactions",
            "Matches masked by a DLP detector",
            m.dlp_redactions.clone(),
        );
        r.register_with_unit(
            "tool_in",
            "Request bytes received from agents, by connector and tool",
            Unit::Bytes,
            m.bytes_in.clone(),
        );
        r.register_with_unit(
            "tool_out",
            "Response bytes sent to agents, by connector and tool",
            Unit::Bytes,
            m.bytes_out.clone(),
        );
        r.register(
            "sessions_live",
            "Open MCP sessions",
            m.live_sessions.clone(),
        );
        r.register_with_unit(
            "session_duration",
            "Length of ended sessions",
            Unit::Seconds,
            m.session_duration.clone(),
        );
        r.register(
            "session_calls",
            "Requests per ended session",
            m.session_calls.clone(),
        );
        r.register(
            "session_unique_tools",
            "Distinct tools called per ended session",
            m.session_tools.clone(),
        );
        r.register("revocations", "Revocations by scope", m.revocations.clone());
        r.register_with_unit(
            "revocation_kill_latency",
            "Revocation to its last flow killed",
            Unit::Seconds,
            m.kill_latency.clone(),
        );
        r.register(
            "revocation_flows_killed",
            "Flows killed by revocations",
            m.flows_killed.clone(),
        );
        r.register_with_unit(
            "audit_write_duration",
            "Time to write one audit record",
            Unit::Seconds,
            m.audit_write.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
        r.register("build_info", "Always 1; the enforcer's version", build_info);
        r.register_collector(Box::new(m.kernel.clone()));
        Arc::new(m)
    }

    pub fn record_call(&self, call: &CallObservation<'_>) {
        let (method, method_bit) = method_label(call.method);
        let series = self.tool_series(call.connector, call.tool, method);
        let outcome = call.outcome;
        series.methods.fetch_or(1 << method_bit, Relaxed);
        let family_counter = || {
            self.calls.get_or_create_owned(&CallLabels {
                connector: series.labels.connector.clone(),
                tool: series.labels.tool.clone(),
                method,
                outcome: outcome.as_str(),
            })
        };
        let (cached_bit, cached) = series
            .calls
            .get_or_init(|| (method_bit, Default::default()));
        if *cached_bit == method_bit {
            cached[outcome as usize].get_or_init(family_counter).inc();
        } else {
            family_counter().inc();
        }
        if outcome.reached_upstream() {
            series.latency.observe(call.latency.as_secs_f64());
        }
        series.bytes_in.inc_by(call.bytes_in);
        series.bytes_out.inc_by(call.bytes_out);
        match outcome {
            Outcome::ToolError => {
                series.tool_errors.inc();
            }
            Outcome::TransportError => {
                series.transport_errors.inc();
            }
            Outcome::Denied => {
                let reason = self
                    .reasons
                    .get(call.reason_code.unwrap_or(NO_REASON), |r| r);
                self.denials
                    .get_or_create(&DenialLabels {
                        connector: series.labels.connector.clone(),
                        tool: series.labels.tool.clone(),
                        reason,
                    })
                    .inc();
            }
            Outcome::Allowed | Outcome::DlpBlocked | Outcome::ApprovalRequired => {}
        }
    }

    /// `count` matches (redactions) or blocked messages (blocks) of one detector.
    pub fn record_dlp(&self, detector: &str, action: DlpAction, count: u64) {
        let labels = DetectorLabels {
            detector: self.detectors.get(detector, |d| d),
        };
        let family = match action {
            DlpAction::Redacted => &self.dlp_redactions,
            DlpAction::Blocked => &self.dlp_blocks,
        };
        family.get_or_create(&labels).inc_by(count);
    }

    pub fn session_started(&self) {
        self.live_sessions.inc();
    }

    /// Call once per `session_started`, when the session closes or expires.
    pub fn session_ended(&self, duration: Duration, calls: u64, unique_tools: u64) {
        self.live_sessions.dec();
        self.session_duration.observe(duration.as_secs_f64());
        self.session_calls.observe(calls as f64);
        self.session_tools.observe(unique_tools as f64);
    }

    /// One revocation: time from the request to its last flow killed, and how many flows.
    pub fn revocation(&self, scope: RevocationScope, kill_latency: Duration, flows_killed: u64) {
        self.revocations
            .get_or_create(&ScopeLabels {
                scope: scope.as_str(),
            })
            .inc();
        self.kill_latency.observe(kill_latency.as_secs_f64());
        self.flows_killed.inc_by(flows_killed);
    }

    pub fn audit_write(&self, latency: Duration) {
        self.audit_write.observe(latency.as_secs_f64());
    }

    /// Replaces the kernel counter source (BPF map reader), called at scrape time.
    pub fn set_kernel_source(&self, source: KernelSource) {
        self.kernel.set(source);
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, &self.registry).expect("encoding into a String cannot fail");
        out
    }

    fn tool_series(
        &self,
        connector: &str,
        tool: Option<&str>,
        method: &'static str,
    ) -> Arc<ToolSeries> {
        let conn = self.connectors.get(connector, |name| {
            Arc::new(ConnectorSeries {
                name,
                tools: BoundedLabels::new(self.max_tools),
            })
        });
        let make = |tool| Arc::new(self.new_tool_series(conn.name.clone(), tool));
        match tool {
            Some(tool) => conn.tools.get(tool, make),
            // Method labels are a closed set: they must not use up (or fall to) the cap.
            None => conn.tools.get_uncapped(method, make),
        }
    }

    fn new_tool_series(&self, connector: Arc<str>, tool: Arc<str>) -> ToolSeries {
        let labels = ToolLabels { connector, tool };
        let error = |kind| {
            self.errors.get_or_create_owned(&ErrorLabels {
                connector: labels.connector.clone(),
                tool: labels.tool.clone(),
                kind,
            })
        };
        ToolSeries {
            latency: self.latency.get_or_create_owned(&labels),
            bytes_in: self.bytes_in.get_or_create_owned(&labels),
            bytes_out: self.bytes_out.get_or_create_owned(&labels),
            tool_errors: error("tool"),
            transport_errors: error("transport"),
            methods: AtomicU64::new(0),
            calls: std::sync::OnceLock::new(),
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::metrics::{
        kernel::KernelCounter,
        labels::OVERFLOW,
        testutil::{parse, value},
    };

    fn call<'a>(tool: &'a str, outcome: Outcome, latency_ms: u64) -> CallObservation<'a> {
        CallObservation {
            connector: "github",
            tool: Some(tool),
            method: "tools/call",
            outcome,
            reason_code: None,
            latency: Duration::from_millis(latency_ms),
            bytes_in: 100,
            bytes_out: 1000,
        }
    }

    #[test]
    fn shareable_across_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Arc<Metrics>>();
    }

    #[test]
    fn known_traffic_renders_exact_values() {
        let m = Metrics::new("1.2.3", &MetricsConfig::default());
        for ms in 1..=10 {
            m.record_call(&call("create_issue", Outcome::Allowed, ms));
        }
        m.record_call(&call("create_issue", Outcome::TransportError, 2000));
        for _ in 0..3 {
            m.record_call(&CallObservation {
                reason_code: Some("prod_write"),
                ..call("delete_repo", Outcome::Denied, 0)
            });
        }
        for _ in 0..2 {
            m.record_call(&call("create_issue", Outcome::DlpBlocked, 0));
            m.record_dlp("aws_access_key", DlpAction::Blocked, 1);
        }
        m.record_dlp("email", DlpAction::Redacted, 4);
        m.session_started();
        m.session_started();
        m.session_ended(Duration::from_secs(90), 16, 2);
        m.revocation(RevocationScope::Agent, Duration::from_millis(3), 2);
        m.audit_write(Duration::from_micros(40));
        m.set_kernel_source(Box::new(|| {
            vec![KernelCounter {
                name: "redirects",
                help: "Connections redirected to the proxy",
                value: 42,
            }]
        }));

        let s = parse(&m.render());
        let tool = |t: &'static str| [("connector", "github"), ("tool", t)];
        let calls = |t, outcome| {
            let l = [
                ("connector", "github"),
                ("tool", t),
                ("method", "tools/call"),
                ("outcome", outcome),
            ];
            value(&s, "enforcer_tool_calls_total", &l)
        };
        assert_eq!(calls("create_issue", "allowed"), Some(10.0));
        assert_eq!(calls("create_issue", "transport_error"), Some(1.0));
        assert_eq!(calls("create_issue", "dlp_blocked"), Some(2.0));
        assert_eq!(calls("delete_repo", "denied"), Some(3.0));
        assert_eq!(calls("create_issue", "denied"), None);

        let h = "enforcer_tool_call_duration_seconds";
        // 10 allowed + 1 transport error; denials and DLP blocks never went upstream.
        assert_eq!(
            value(&s, &format!("{h}_count"), &tool("create_issue")),
            Some(11.0)
        );
        let sum = value(&s, &format!("{h}_sum"), &tool("create_issue")).unwrap();
        assert!((sum - 2.055).abs() < 1e-9, "{sum}");
        let le = |bound| {
            let mut l = tool("create_issue").to_vec();
            l.push(("le", bound));
            value(&s, &format!("{h}_bucket"), &l)
        };
        assert_eq!(le("0.005"), Some(5.0));
        assert_eq!(le("0.01"), Some(10.0));
        assert_eq!(le("1.0"), Some(10.0));
        assert_eq!(le("2.5"), Some(11.0));
        assert_eq!(le("+Inf"), Some(11.0));
        assert_eq!(
            value(&s, &format!("{h}_count"), &tool("delete_repo")),
            Some(0.0)
        );

        let errors = |kind| {
            let l = [
                ("connector", "github"),
                ("tool", "create_issue"),
                ("kind", kind),
            ];
            value(&s, "enforcer_tool_errors_total", &l)
        };
        assert_eq!(errors("transport"), Some(1.0));
        assert_eq!(errors("tool"), Some(0.0));
        let denial = [
            ("connector", "github"),
            ("tool", "delete_repo"),
            ("reason", "prod_write"),
        ];
        assert_eq!(value(&s, "enforcer_denials_total", &denial), Some(3.0));
        let detector = |d| [("detector", d)];
        assert_eq!(
            value(&s, "enforcer_dlp_blocks_total", &detector("aws_access_key")),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "enforcer_dlp_redactions_total", &detector("email")),
            Some(4.0)
        );
        // 13 calls of create_issue, 3 of delete_repo.
        let bytes_in = value(&s, "enforcer_tool_in_bytes_total", &tool("create_issue"));
        assert_eq!(bytes_in, Some(1300.0));
        let bytes_out = value(&s, "enforcer_tool_out_bytes_total", &tool("delete_repo"));
        assert_eq!(bytes_out, Some(3000.0));

        assert_eq!(value(&s, "enforcer_sessions_live", &[]), Some(1.0));
        assert_eq!(
            value(&s, "enforcer_session_duration_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "enforcer_session_duration_seconds_sum", &[]),
            Some(90.0)
        );
        assert_eq!(value(&s, "enforcer_session_calls_sum", &[]), Some(16.0));
        assert_eq!(
            value(&s, "enforcer_session_unique_tools_count", &[]),
            Some(1.0)
        );
        let scope = [("scope", "agent")];
        assert_eq!(value(&s, "enforcer_revocations_total", &scope), Some(1.0));
        assert_eq!(
            value(&s, "enforcer_revocation_flows_killed_total", &[]),
            Some(2.0)
        );
        let kill = "enforcer_revocation_kill_latency_seconds_count";
        assert_eq!(value(&s, kill, &[]), Some(1.0));
        let audit = "enforcer_audit_write_duration_seconds_bucket";
        assert_eq!(value(&s, audit, &[("le", "0.00005")]), Some(1.0));
        assert_eq!(value(&s, audit, &[("le", "0.000025")]), Some(0.0));
        let version = [("version", "1.2.3")];
        assert_eq!(value(&s, "enforcer_build_info", &version), Some(1.0));
        assert_eq!(
            value(&s, "enforcer_kernel_redirects_total", &[]),
            Some(42.0)
        );
    }

    #[test]
    fn tool_names_are_capped_per_connector() {
        let m = Metrics::new("t", &MetricsConfig::default());
        for i in 0..600 {
            m.record_call(&call(&format!("tool_{i}"), Outcome::Allowed, 1));
        }
        // Non-tool methods keep their own label even past the cap.
        m.record_call(&CallObservation {
            tool: None,
            method: "tools/list",
            ..call("", Outcome::Allowed, 1)
        });
        // Another connector has its own budget.
        m.record_call(&CallObservation {
            connector: "jira",
            ..call("tool_599", Outcome::Allowed, 1)
        });

        let s = parse(&m.render());
        let tools: BTreeSet<&str> = s
            .iter()
            .filter(|x| x.name == "enforcer_tool_calls_total" && x.labels["connector"] == "github")
            .map(|x| x.labels["tool"].as_str())
            .collect();
        assert_eq!(tools.len(), 500 + 2);
        assert!(tools.contains(OVERFLOW) && tools.contains("tools/list"));
        assert!(tools.contains("tool_499") && !tools.contains("tool_500"));
        let other = [
            ("connector", "github"),
            ("tool", OVERFLOW),
            ("method", "tools/call"),
            ("outcome", "allowed"),
        ];
        assert_eq!(value(&s, "enforcer_tool_calls_total", &other), Some(100.0));
        let histograms = s
            .iter()
            .filter(|x| x.name == "enforcer_tool_call_duration_seconds_count")
            .count();
        assert_eq!(histograms, 500 + 2 + 1);
        let jira = [
            ("connector", "jira"),
            ("tool", "tool_599"),
            ("method", "tools/call"),
            ("outcome", "allowed"),
        ];
        assert_eq!(value(&s, "enforcer_tool_calls_total", &jira), Some(1.0));
    }

    #[test]
    fn a_series_seeing_two_methods_counts_each() {
        // The first method's counters are cached on the series; a second one (a prompt named
        // like a tool) goes through the family, and both render exact counts.
        let m = Metrics::new("t", &MetricsConfig::default());
        for _ in 0..3 {
            m.record_call(&call("triage", Outcome::Allowed, 1));
        }
        for _ in 0..2 {
            m.record_call(&CallObservation {
                method: "prompts/get",
                ..call("triage", Outcome::Allowed, 1)
            });
        }
        m.record_call(&call("triage", Outcome::ToolError, 1));
        let s = parse(&m.render());
        let calls = |method, outcome| {
            let l = [
                ("connector", "github"),
                ("tool", "triage"),
                ("method", method),
                ("outcome", outcome),
            ];
            value(&s, "enforcer_tool_calls_total", &l)
        };
        assert_eq!(calls("tools/call", "allowed"), Some(3.0));
        assert_eq!(calls("tools/call", "tool_error"), Some(1.0));
        assert_eq!(calls("prompts/get", "allowed"), Some(2.0));
        assert_eq!(calls("prompts/get", "tool_error"), None);
    }

    #[test]
    fn reason_codes_and_methods_are_bounded() {
        let config = MetricsConfig {
            max_reason_codes: 2,
            ..MetricsConfig::default()
        };
        let m = Metrics::new("t", &config);
        for reason in [Some("a"), Some("b"), Some("session 4f2c: \"x\"\n"), None] {
            m.record_call(&CallObservation {
                reason_code: reason,
                method: "made/up",
                ..call("t", Outcome::Denied, 0)
            });
        }
        let s = parse(&m.render());
        let reasons: BTreeSet<&str> = s
            .iter()
            .filter(|x| x.name == "enforcer_denials_total")
            .map(|x| x.labels["reason"].as_str())
            .collect();
        assert_eq!(reasons, BTreeSet::from(["a", "b", OVERFLOW]));
        let methods: BTreeSet<&str> = s
            .iter()
            .filter(|x| x.name == "enforcer_tool_calls_total")
            .map(|x| x.labels["method"].as_str())
            .collect();
        assert_eq!(methods, BTreeSet::from([OVERFLOW]));
    }
}
