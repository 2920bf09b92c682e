//! Running it like infrastructure: the metrics endpoint and `enforcer top` against known
//! traffic, SIEM export (JSON lines and a webhook receiver that goes down and comes back),
//! and `enforcer config check`. Real daemon, real kernel, real SDK peers.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use enforcer_tests::{lines, mcp::setup_with_drill_policy, read_until, wait_for};
use serde_json::Value;

const URL: &str = "https://mcp.test:8443/mcp";
const RECEIVER_PORT: u16 = 9700;

/// One sample line of the OpenMetrics text: its labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once("} ")?;
                    (labels, value)
                }
                None => ("", rest.strip_prefix(' ')?),
            };
            let map = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((map, value.split(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The receiver process, killed when dropped (also when an assertion fails).
struct Receiver(std::process::Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receiver_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn metrics_top_and_siem_export_follow_real_traffic_and_a_receiver_outage_loses_nothing() {
    let token = "siem-token-4f1d9b";
    let toml = format!(
        r#"
[[export.jsonl]]
id = "file"
path = "EXPORT_DIR/events.jsonl"
from = "beginning"

[[export.webhook]]
id = "siem"
url = "http://127.0.0.1:{RECEIVER_PORT}/ingest"
from = "beginning"
batch_max = 20
retry_initial_ms = 100
retry_max_ms = 400
max_backlog = 2
header_files = {{ Authorization = "EXPORT_DIR/siem-token" }}
"#
    );
    // The export directory must exist before the daemon starts: use a fixed temp path.
    let export_dir = std::env::temp_dir().join(format!("enforcer-export-{}", std::process::id()));
    std::fs::create_dir_all(&export_dir).unwrap();
    std::fs::write(export_dir.join("siem-token"), format!("Bearer {token}")).unwrap();
    let toml = toml.replace("EXPORT_DIR", &export_dir.display().to_string());
    let m = setup_with_drill_policy("ops-metrics", "", &toml);
    let h = &m.host;
    let received = export_dir.join("received.jsonl");
    let python = enforcer_tests::mcp::python();
    let receiver_script = enforcer_tests::mcp::peers().join("webhook_receiver.py");
    let start_receiver = || {
        let mut child = h
            .host_ns_cmd(&python)
            .arg(&receiver_script)
            .args(["127.0.0.1", &RECEIVER_PORT.to_string()])
            .arg(&received)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        read_until(&mut lines(&mut child), |v| v.get("ready").is_some()).expect("receiver up");
        Receiver(child)
    };
    let receiver = start_receiver();

    // Known traffic: three echo calls and one denied destructive call.
    let out = m.client(
        "k1",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            "echo:a",
            "--calls",
            "echo:b",
            "--calls",
            "echo:c",
            "--calls",
            r#"delete_everything:{"confirm":true}"#,
        ],
    );
    assert_eq!(
        out.iter()
            .filter(|l| l["call"] == "echo" && l.get("result").is_some())
            .count(),
        3,
        "{out:?}"
    );

    // The Prometheus endpoint, on the daemon's loopback.
    let scrape = || {
        let o = h
            .host_ns_cmd("curl")
            .args(["-sS", "-D", "-", "http://127.0.0.1:9464/metrics"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let text = scrape();
    assert!(text.contains("application/openmetrics-text"), "{text}");
    let calls = |outcome: &str, tool: &str| {
        value(
            &text,
            "enforcer_tool_calls_total",
            &[
                ("connector", "mcp-test"),
                ("tool", tool),
                ("method", "tools/call"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("allowed", "echo"), 3.0, "{text}");
    assert_eq!(calls("denied", "delete_everything"), 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            "enforcer_denials_total",
            &[
                ("tool", "delete_everything"),
                ("reason", "destructive_tool")
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "enforcer_tool_call_duration_seconds_count",
            &[("tool", "echo")]
        ),
        3.0,
        "{text}"
    );
    assert!(value(&text, "enforcer_tool_out_bytes_total", &[("tool", "echo")]) > 0.0);
    assert!(
        value(&text, "enforcer_kernel_redirected_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "enforcer_audit_write_duration_seconds_count", &[]) >= 4.0);
    let session = h.cli_json(&["sessions", "--json"])["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains(&session), "no session ids in labels");
    assert!(!text.contains(token), "never the export secret");

    // `enforcer top`: the same figures in the terminal, and as JSON.
    let top = h.enforcer(&["top", "--once", "--interval", "0.2"]);
    let table = String::from_utf8_lossy(&top.stdout).to_string();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(
        table.contains("echo") && table.contains("delete_everything"),
        "{table}"
    );
    let snap = h.cli_json(&["top", "--json"]);
    let echo = snap["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "echo")
        .expect("echo in the snapshot")
        .clone();
    assert_eq!(echo["calls"], 3, "{echo}");
    assert!(echo["p50_seconds"].as_f64().is_some(), "{echo}");

    // Export: every receipt so far reached the file and the receiver, in order, with the
    // secret header; then the receiver goes down while more traffic happens.
    let head = || {
        h.cli_json(&["audit", "search", "--json", "--limit", "1"])["receipts"][0]["seq"]
            .as_u64()
            .unwrap()
    };
    let delivered_all = |upto: u64| {
        let seqs: Vec<u64> = receiver_events(&received)
            .iter()
            .filter(|e| e["event"]["kind"] == "receipt")
            .map(|e| e["event"]["seq"].as_u64().unwrap())
            .collect();
        let mut unique = seqs.clone();
        unique.dedup();
        unique == (1..=upto).collect::<Vec<_>>()
    };
    let n = head();
    assert!(
        wait_for(Duration::from_secs(10), || delivered_all(n)).is_some(),
        "receipts 1..={n} reach the receiver in order: {:?}",
        receiver_events(&received).len()
    );
    let first = &receiver_events(&received)[0];
    assert_eq!(first["auth"], format!("Bearer {token}"));
    assert_eq!(first["event"]["schema"], "enforcer.event/1");
    let file_lines = std::fs::read_to_string(export_dir.join("events.jsonl")).unwrap();
    assert!(
        file_lines.lines().count() as u64 >= n,
        "the JSON-lines file follows too"
    );

    drop(receiver);
    let more = m.client(
        "k2",
        URL,
        &["--mode", "legacy", "--calls", "echo:during-outage"],
    );
    assert!(
        more.iter().any(|l| l["result"] == "during-outage"),
        "{more:?}"
    );
    let n2 = head();
    assert!(n2 >= n + 3, "more receipts while the receiver is down");
    let behind = wait_for(Duration::from_secs(10), || {
        let st = h.cli_json(&["exports", "--json"]);
        let siem = st["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "siem")
            .cloned()
            .unwrap_or_default();
        siem["failures"].as_u64().unwrap_or(0) >= 1 && siem["alarm"] == true
    });
    assert!(behind.is_some(), "{}", h.cli_json(&["exports", "--json"]));
    let table = String::from_utf8_lossy(&h.enforcer(&["exports"]).stdout).to_string();
    assert!(table.contains("siem") && table.contains("YES"), "{table}");
    assert!(!table.contains(token));

    // The receiver comes back on the same port: everything missed arrives, no gaps.
    let _receiver = start_receiver();
    assert!(
        wait_for(Duration::from_secs(15), || delivered_all(n2)).is_some(),
        "after the outage, receipts 1..={n2} all arrived"
    );
    let log: Vec<String> = h.daemon_log_lines().iter().map(|l| l.to_string()).collect();
    assert!(
        !log.iter().any(|l| l.contains(token)),
        "the export secret is never logged"
    );
    let _ = std::fs::remove_dir_all(&export_dir);
}

#[test]
fn config_check_names_the_file_line_and_what_to_change() {
    let dir = std::env::temp_dir().join(format!("enforcer-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(enforcer_tests::bin("enforcer"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let good = check(
        "good.toml",
        "[proxy]\nport = 15001\n[metrics]\nlisten = \"127.0.0.1:9500\"\n",
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("ok"));

    let unknown = check("unknown.toml", "[proxy]\nport = 15001\nprot = 2\n");
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr).to_string();
    assert!(
        err.contains("unknown.toml") && err.contains("line 3") && err.contains("prot"),
        "{err}"
    );

    let bad_value = check("value.toml", "# comment\n[proxy]\nport = 0\n");
    let err = String::from_utf8_lossy(&bad_value.stderr).to_string();
    assert_eq!(bad_value.status.code(), Some(2), "{err}");
    assert!(
        err.contains("value.toml:3") && err.contains("proxy.port"),
        "{err}"
    );

    let exposed = check("exposed.toml", "[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    let err = String::from_utf8_lossy(&exposed.stderr).to_string();
    assert_eq!(exposed.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exposed.toml:2") && err.contains("allow_non_loopback"),
        "{err}"
    );

    let policy = dir.join("bad.cedar");
    std::fs::write(
        &policy,
        "permit(principal, action, resource)\nwhen { context.nope == 1 ;\n",
    )
    .unwrap();
    let bad_policy = check(
        "policy.toml",
        &format!("[policy]\nfile = \"{}\"\n", policy.display()),
    );
    let err = String::from_utf8_lossy(&bad_policy.stderr).to_string();
    assert_eq!(bad_policy.status.code(), Some(2), "{err}");
    assert!(
        err.contains("policy.toml:2") && err.contains("bad.cedar"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
