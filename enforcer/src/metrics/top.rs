//! The `enforcer top` screen: plain text, at most [`WIDTH`] columns, no escape codes (the
//! caller may prepend a clear-screen). One row per (connector, tool), busiest first; a
//! caller short of terminal lines can keep only the first lines.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use super::snapshot::{Snapshot, ToolStats};

const WIDTH: usize = 120;

const CONNECTOR_W: usize = 16;
const TOOL_W: usize = 24;

/// `previous` and `elapsed` (the time between the two snapshots) give the calls/s
/// columns; without them those show `-`.
pub fn render_top(snapshot: &Snapshot, previous: Option<&Snapshot>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let per_sec = |now: u64, before: Option<u64>| match previous {
        Some(_) if secs > 0.0 => {
            // A restarted daemon resets its counters: show 0, not a huge number.
            format!(
                "{:.1}",
                now.saturating_sub(before.unwrap_or(0)) as f64 / secs
            )
        }
        _ => "-".to_owned(),
    };
    let t = &snapshot.totals;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        clip(
            &format!(
                "enforcer {}  calls {} ({}/s)  errors {}%  denials {}%  live sessions {}",
                clean(&snapshot.version),
                t.calls,
                per_sec(t.calls, previous.map(|p| p.totals.calls)),
                percent(t.error_rate),
                percent(t.denial_rate),
                snapshot.live_sessions,
            ),
            WIDTH
        )
    );
    let _ = writeln!(
        out,
        "in {}  out {}  dlp blocks {}  dlp redactions {}  revocations {}  flows killed {}",
        bytes(t.bytes_in),
        bytes(t.bytes_out),
        t.dlp_blocks,
        t.dlp_redactions,
        t.revocations,
        t.flows_killed,
    );
    write_kernel_lines(&mut out, snapshot);
    out.push('\n');

    let _ = writeln!(
        out,
        "{:<CONNECTOR_W$} {:<TOOL_W$} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9}",
        "CONNECTOR", "TOOL", "CALLS", "CALLS/S", "P50", "P99", "ERR%", "DENY%", "DLP", "IN", "OUT",
    );
    let before: HashMap<(&str, &str), &ToolStats> = previous
        .map(|p| {
            p.tools
                .iter()
                .map(|r| ((r.connector.as_str(), r.tool.as_str()), r))
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<&ToolStats> = snapshot.tools.iter().collect();
    rows.sort_by(|a, b| (b.calls, &a.connector, &a.tool).cmp(&(a.calls, &b.connector, &b.tool)));
    for r in rows {
        let prev = before
            .get(&(r.connector.as_str(), r.tool.as_str()))
            .map(|p| p.calls);
        let _ = writeln!(
            out,
            "{:<CONNECTOR_W$} {:<TOOL_W$} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9}",
            clip(&clean(&r.connector), CONNECTOR_W),
            clip(&clean(&r.tool), TOOL_W),
            r.calls,
            per_sec(r.calls, prev),
            seconds(r.p50_seconds),
            seconds(r.p99_seconds),
            percent(r.error_rate),
            percent(r.denial_rate),
            r.dlp_blocks,
            bytes(r.bytes_in),
            bytes(r.bytes_out),
        );
    }
    out
}

/// `kernel: a=1 b=2 …`, wrapped at the screen width.
fn write_kernel_lines(out: &mut String, snapshot: &Snapshot) {
    if snapshot.kernel.is_empty() {
        return;
    }
    let mut line = String::from("kernel:");
    for k in &snapshot.kernel {
        let item = clip(&format!(" {}={}", clean(&k.name), k.value), WIDTH);
        if line.len() + item.len() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = String::from("       ");
        }
        line.push_str(&item);
    }
    let _ = writeln!(out, "{line}");
}

/// Tool and connector names come from servers and clients: anything but printable ASCII
/// could be a terminal escape sequence or a double-width character breaking the layout.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Cuts ASCII text to `width` columns, marking the cut with `~`.
fn clip(s: &str, width: usize) -> String {
    if s.len() <= width {
        s.to_owned()
    } else {
        format!("{}~", &s[..width - 1])
    }
}

fn percent(rate: f64) -> String {
    format!("{:.1}", rate * 100.0)
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s < 0.001 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{
        config::MetricsConfig,
        kernel::KernelCounter,
        labels::Outcome,
        recorder::{CallObservation, Metrics},
    };

    fn calls(m: &Metrics, tool: &str, n: usize) {
        for _ in 0..n {
            m.record_call(&CallObservation {
                connector: "github",
                tool: Some(tool),
                method: "tools/call",
                outcome: Outcome::Allowed,
                reason_code: None,
                latency: Duration::from_millis(3),
                bytes_in: 2048,
                bytes_out: 10,
            });
        }
    }

    #[test]
    fn rows_sorted_by_calls_with_rates() {
        let m = Metrics::new("0.1.0", &MetricsConfig::default());
        m.set_kernel_source(Box::new(|| {
            vec![KernelCounter {
                name: "redirects",
                help: "h",
                value: 9,
            }]
        }));
        calls(&m, "list_repos", 10);
        calls(&m, "create_issue", 4);
        let before = m.snapshot();
        calls(&m, "list_repos", 20);
        calls(&m, "create_issue", 30);
        calls(&m, "wide_ツール_tool_with_a_very_long_name", 1);
        calls(&m, "evil\u{1b}[2J", 1);
        let now = m.snapshot();

        let screen = render_top(&now, Some(&before), Duration::from_secs(2));
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines[0].contains("calls 66 (26.0/s)"), "{}", lines[0]);
        assert!(lines[2].contains("redirects=9"), "{}", lines[2]);
        let rows: Vec<Vec<&str>> = lines
            .iter()
            .skip_while(|l| !l.starts_with("CONNECTOR"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        // create_issue (34 calls, 15/s), list_repos (30, 10/s), then the new ones by name.
        // The name with an escape sequence never became a label; the wide one is cleaned.
        let wide = "wide_???_tool_with_a_ve~";
        assert_eq!(rows[0][..4], ["github", "create_issue", "34", "15.0"]);
        assert_eq!(rows[1][..4], ["github", "list_repos", "30", "10.0"]);
        assert_eq!(rows[2][..4], ["github", "_other", "1", "0.5"]);
        assert_eq!(rows[3][..4], ["github", wide, "1", "0.5"]);
        assert_eq!(rows[0][9], "68.0KiB");
        assert_eq!(rows.len(), 4);
        assert!(lines.iter().all(|l| l.len() <= WIDTH), "{screen}");
        assert!(!screen.contains('\u{1b}'));

        let first = render_top(&now, None, Duration::ZERO);
        assert!(first.contains("calls 66 (-/s)"));
    }
}
