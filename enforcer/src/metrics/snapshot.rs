//! A point-in-time copy of the metrics for `enforcer top` (serialisable, so the daemon
//! can hand it to the CLI as JSON).

use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use super::{
    labels::{methods_in, CallLabels, DetectorLabels, Outcome, RevocationScope, ScopeLabels},
    recorder::{Metrics, ToolSeries},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: String,
    pub live_sessions: i64,
    pub totals: Totals,
    /// Sorted by calls, most first.
    pub tools: Vec<ToolStats>,
    pub kernel: Vec<KernelValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub calls: u64,
    pub tool_errors: u64,
    pub transport_errors: u64,
    pub denials: u64,
    /// Calls refused by DLP.
    pub dlp_blocks: u64,
    /// Matches masked, all detectors.
    pub dlp_redactions: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub revocations: u64,
    pub flows_killed: u64,
    /// (tool + transport errors) / calls; 0 without calls.
    pub error_rate: f64,
    /// denials / calls; 0 without calls.
    pub denial_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolStats {
    pub connector: String,
    /// A tool name, a method name (non-tool requests) or `_other`.
    pub tool: String,
    pub calls: u64,
    pub tool_errors: u64,
    pub transport_errors: u64,
    pub denials: u64,
    pub dlp_blocks: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Latency percentiles in seconds, estimated from the histogram buckets by linear
    /// interpolation inside the bucket: accurate to the bucket, not to the microsecond.
    /// `None` until a call reached the server.
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub error_rate: f64,
    pub denial_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelValue {
    pub name: String,
    pub value: u64,
}

fn rate(part: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        part as f64 / calls as f64
    }
}

impl Metrics {
    /// Reads every series once; counters keep moving meanwhile, so totals are consistent
    /// to within the calls recorded during the read.
    pub fn snapshot(&self) -> Snapshot {
        let mut tools: Vec<ToolStats> = self
            .connectors
            .values()
            .iter()
            .flat_map(|c| c.tools.values())
            .map(|s| self.tool_stats(&s))
            .collect();
        tools.sort_by(|a, b| {
            (b.calls, &a.connector, &a.tool).cmp(&(a.calls, &b.connector, &b.tool))
        });

        let mut t = Totals::default();
        for s in &tools {
            t.calls += s.calls;
            t.tool_errors += s.tool_errors;
            t.transport_errors += s.transport_errors;
            t.denials += s.denials;
            t.dlp_blocks += s.dlp_blocks;
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
        }
        t.error_rate = rate(t.tool_errors + t.transport_errors, t.calls);
        t.denial_rate = rate(t.denials, t.calls);
        t.dlp_redactions = self
            .detectors
            .values()
            .into_iter()
            .filter_map(|detector| {
                let labels = DetectorLabels { detector };
                self.dlp_redactions.get(&labels).map(|c| c.get())
            })
            .sum();
        t.revocations = RevocationScope::ALL
            .into_iter()
            .filter_map(|s| {
                let labels = ScopeLabels { scope: s.as_str() };
                self.revocations.get(&labels).map(|c| c.get())
            })
            .sum();
        t.flows_killed = self.flows_killed.get();

        Snapshot {
            version: self.version.clone(),
            live_sessions: self.live_sessions.get(),
            totals: t,
            tools,
            kernel: self
                .kernel
                .read()
                .into_iter()
                .map(|c| KernelValue {
                    name: c.name.to_owned(),
                    value: c.value,
                })
                .collect(),
        }
    }

    fn tool_stats(&self, s: &ToolSeries) -> ToolStats {
        let mut by_outcome = [0u64; Outcome::ALL.len()];
        for method in methods_in(s.methods.load(Relaxed)) {
            for outcome in Outcome::ALL {
                let labels = CallLabels {
                    connector: s.labels.connector.clone(),
                    tool: s.labels.tool.clone(),
                    method,
                    outcome: outcome.as_str(),
                };
                by_outcome[outcome as usize] += self.calls.get(&labels).map_or(0, |c| c.get());
            }
        }
        let calls = by_outcome.iter().sum();
        let buckets = s.latency.buckets();
        let (tool_errors, transport_errors) = (s.tool_errors.get(), s.transport_errors.get());
        let denials = by_outcome[Outcome::Denied as usize];
        ToolStats {
            connector: s.labels.connector.to_string(),
            tool: s.labels.tool.to_string(),
            calls,
            tool_errors,
            transport_errors,
            denials,
            dlp_blocks: by_outcome[Outcome::DlpBlocked as usize],
            bytes_in: s.bytes_in.get(),
            bytes_out: s.bytes_out.get(),
            p50_seconds: buckets.quantile(0.50),
            p90_seconds: buckets.quantile(0.90),
            p99_seconds: buckets.quantile(0.99),
            error_rate: rate(tool_errors + transport_errors, calls),
            denial_rate: rate(denials, calls),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{
        config::MetricsConfig, kernel::KernelCounter, labels::DlpAction, recorder::CallObservation,
    };

    fn call(tool: &str, outcome: Outcome, latency: Duration) -> CallObservation<'_> {
        CallObservation {
            connector: "fs",
            tool: Some(tool),
            method: "tools/call",
            outcome,
            reason_code: Some("r"),
            latency,
            bytes_in: 10,
            bytes_out: 20,
        }
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let m = Metrics::new("t", &MetricsConfig::default());
        // 1 ms .. 100 ms, evenly: true p50 = 50 ms, p90 = 90 ms, p99 = 99 ms.
        for ms in 1..=100 {
            m.record_call(&call("read", Outcome::Allowed, Duration::from_millis(ms)));
        }
        let s = m.snapshot();
        let read = &s.tools[0];
        let within = |p: Option<f64>, lo: f64, hi: f64| {
            let p = p.unwrap();
            assert!(lo <= p && p <= hi, "{p} not in [{lo}, {hi}]");
        };
        within(read.p50_seconds, 0.025, 0.05);
        within(read.p90_seconds, 0.05, 0.1);
        within(read.p99_seconds, 0.05, 0.1);
        // Interpolation: rank 90 is the 40th of 50 in (50 ms, 100 ms].
        assert!((read.p90_seconds.unwrap() - 0.09).abs() < 1e-9);
    }

    #[test]
    fn totals_rates_and_kernel() {
        let m = Metrics::new("t", &MetricsConfig::default());
        let ms = Duration::from_millis(1);
        for _ in 0..6 {
            m.record_call(&call("read", Outcome::Allowed, ms));
        }
        m.record_call(&call("read", Outcome::ToolError, ms));
        m.record_call(&call("read", Outcome::TransportError, ms));
        m.record_call(&call("write", Outcome::Denied, ms));
        m.record_call(&call("write", Outcome::DlpBlocked, ms));
        m.record_dlp("email", DlpAction::Redacted, 3);
        m.session_started();
        m.set_kernel_source(Box::new(|| {
            vec![KernelCounter {
                name: "refused_udp",
                help: "h",
                value: 7,
            }]
        }));

        let s = m.snapshot();
        assert_eq!(s.live_sessions, 1);
        assert_eq!(
            (s.tools[0].tool.as_str(), s.tools[0].calls),
            ("read", 8),
            "busiest first"
        );
        assert_eq!(
            (s.tools[0].tool_errors, s.tools[0].transport_errors),
            (1, 1)
        );
        assert_eq!(s.tools[0].error_rate, 0.25);
        let write = &s.tools[1];
        assert_eq!(
            (write.denials, write.dlp_blocks, write.denial_rate),
            (1, 1, 0.5)
        );
        assert_eq!(write.p50_seconds, None, "never reached the server");
        let t = &s.totals;
        assert_eq!(
            (t.calls, t.denials, t.dlp_blocks, t.dlp_redactions),
            (10, 1, 1, 3)
        );
        assert_eq!((t.error_rate, t.denial_rate), (0.2, 0.1));
        assert_eq!((t.bytes_in, t.bytes_out), (100, 200));
        assert_eq!(
            s.kernel,
            [KernelValue {
                name: "refused_udp".into(),
                value: 7
            }]
        );
        // Handed to `enforcer top` as JSON (floats may differ in the last digit).
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!((&back.totals, &back.kernel), (&s.totals, &s.kernel));
        assert_eq!(back.tools[1], s.tools[1]);
    }
}
