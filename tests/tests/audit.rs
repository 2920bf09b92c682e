//! Policy decisions, deny diagnostics, masking and receipts with real traffic: the official
//! MCP SDK client and server through the kernel redirect and the enforcer (issue: policy,
//! audit receipts, masking). Every test is privileged and runs in CI.

use std::{io::BufRead as _, time::Duration};

use enforcer_tests::{
    mcp::{
        policy_file, setup_with_drill_policy, McpHost, AGENT_TOKEN, FAKE_AWS_KEY, UPSTREAM_TOKEN,
    },
    wait_for,
};
use serde_json::{json, Value};

const URL: &str = "https://mcp.test:8443/mcp";

fn find<'a>(out: &'a [Value], key: &str) -> &'a Value {
    out.iter()
        .find(|l| l.get(key).is_some())
        .unwrap_or_else(|| panic!("no {key:?} line in {out:?}"))
}

fn call<'a>(out: &'a [Value], tool: &str, nth: usize) -> &'a Value {
    out.iter()
        .filter(|l| l["call"] == tool)
        .nth(nth)
        .unwrap_or_else(|| panic!("no call #{nth} of {tool} in {out:?}"))
}

fn show(m: &McpHost, receipt: &str) -> Value {
    m.host.cli_json(&["audit", "show", receipt, "--json"])
}

#[test]
fn receipts_carry_the_whole_ticket_and_denials_carry_their_diagnostics() {
    let m = setup_with_drill_policy("audit-ticket", "", "");
    let out = m.client(
        "t1",
        URL,
        &[
            "--mode",
            "legacy",
            "--token",
            AGENT_TOKEN,
            "--calls",
            "echo:hello",
            "echo:/etc/passwd",
            r#"delete_everything:{"confirm":true}"#,
            "leak_secret",
        ],
    );

    // tools/list hides the tool nobody may ever call; the conditionally blocked one stays.
    let tools = find(&out, "tools")["tools"].as_array().unwrap().clone();
    assert!(!tools.contains(&json!("delete_everything")), "{tools:?}");
    for t in ["echo", "whoami", "leak_secret", "slow_count"] {
        assert!(tools.contains(&json!(t)), "{t} listed: {tools:?}");
    }
    assert_eq!(call(&out, "echo", 0)["result"], "hello");

    // Denials reach the agent as JSON-RPC errors carrying the diagnostics.
    let etc = call(&out, "echo", 1);
    assert_eq!(etc["code"], -32003, "{etc}");
    let d = &etc["data"];
    assert_eq!(d["reason_code"], "sensitive_path", "{etc}");
    assert_eq!(d["rule"], "echo-no-etc-paths");
    assert!(d["note"].as_str().unwrap().contains("/etc/"), "{d}");
    assert_eq!(d["policy_version"], "v1");
    assert_eq!(d["environment"], "test");
    let hidden = call(&out, "delete_everything", 0);
    assert_eq!(
        hidden["code"], -32003,
        "calling a hidden tool is denied: {hidden}"
    );
    assert_eq!(hidden["data"]["rule"], "no-destructive-tools");
    assert_eq!(hidden["data"]["reason_code"], "destructive_tool");

    // Masking: a cloud key and the bound credential (echoed by the tool) are redacted.
    let leak = call(&out, "leak_secret", 0)["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(leak.contains("[REDACTED:aws_access_key]"), "{leak}");
    assert!(leak.contains("[REDACTED:bound_secret]"), "{leak}");
    assert!(
        !leak.contains(FAKE_AWS_KEY) && !leak.contains(UPSTREAM_TOKEN),
        "{leak}"
    );

    // The denied call's receipt, from the id the agent was given.
    let receipt_id = hidden["data"]["receipt"]
        .as_str()
        .expect("receipt id")
        .to_string();
    let r = show(&m, &receipt_id);
    assert_eq!(r["id"], receipt_id);
    assert_eq!(r["kind"], "exchange");
    assert_eq!(r["request"]["method"], "tools/call");
    assert_eq!(r["request"]["target"], "delete_everything");
    assert_eq!(r["request"]["arguments_redacted"], json!({"confirm": true}));
    assert!(r["request"]["arguments_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(r["request"]["era"], "session");
    assert_eq!(r["actor"]["agent"], "sdk-agent");
    assert_eq!(r["actor"]["instance"], "t1");
    assert_eq!(r["actor"]["user"], "root");
    assert_eq!(r["actor"]["uid"], 0);
    assert!(r["actor"]["instance_id"].as_u64().unwrap() > 0);
    assert!(
        r["actor"]["surface"]["exe"]
            .as_str()
            .unwrap()
            .contains("python"),
        "{r}"
    );
    assert!(
        r["actor"]["surface"]["client"]
            .as_str()
            .unwrap_or("")
            .contains("mcp"),
        "clientInfo from initialize: {r}"
    );
    let p = &r["policy"];
    assert_eq!(p["version"], "v1");
    assert!(p["version_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(p["environment"], "test");
    assert_eq!(p["decision"], "deny");
    assert_eq!(p["rule"], "no-destructive-tools");
    assert_eq!(p["reason_code"], "destructive_tool");
    assert!(p["note"].as_str().unwrap().contains("delete_*"));
    assert_eq!(r["connector"]["connector"], "mcp-test");
    assert!(!r["connector"]["route"].as_str().unwrap().is_empty());
    assert!(!r["connector"]["backend"].as_str().unwrap().is_empty());
    assert_eq!(r["connector"]["route_status"]["state"], "reachable", "{r}");
    let s = &r["session"];
    assert!(s["enforcer_session"].as_str().unwrap().starts_with("s-"));
    assert!(s["client_flow"].as_str().unwrap().contains("->"));
    assert!(s["protocol_session_id"].is_string(), "session era id: {r}");
    assert!(s["idle_limit_ms"].as_u64().unwrap() > 0);
    assert_eq!(r["outcome"]["status"], "denied");
    assert_eq!(r["outcome"]["rpc_error_code"], -32003);
    assert_eq!(
        r["credential"]["mode"], "withheld",
        "refused before injection: {r}"
    );
    assert_eq!(r["credential"]["binding"], "mcp-token@v3");

    // The allowed call: credential injected (reference only), backend flow, latency, bytes.
    let ok = m.search(&["--tool", "echo", "--outcome", "ok"]);
    assert_eq!(ok.len(), 1, "{ok:?}");
    let e = &ok[0];
    assert_eq!(e["credential"]["mode"], "inject");
    assert_eq!(e["credential"]["binding"], "mcp-token@v3");
    assert_eq!(e["policy"]["decision"], "allow");
    assert_eq!(e["policy"]["rule"], "sdk-agent-tools");
    assert!(
        e["session"]["backend_flow"]
            .as_str()
            .unwrap()
            .contains("->"),
        "{e}"
    );
    assert!(e["outcome"]["latency_us"].as_u64().unwrap() > 0);
    assert!(e["outcome"]["bytes_in"].as_u64().unwrap() > 0);
    assert!(e["outcome"]["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(e["outcome"]["http_status"], 200);
    // Its recording is the result the agent got (judged from the text: nothing to mask).
    assert_eq!(
        e["recording"]["response"]["content"][0]["text"], "hello",
        "{e}"
    );
    assert_eq!(e["request"]["arguments_redacted"], json!({"text": "hello"}));

    // The masked call counts per detector, never the text.
    let leaks = m.search(&["--tool", "leak_secret"]);
    assert_eq!(leaks.len(), 1);
    let recorded = leaks[0]["recording"]["response"].to_string();
    assert!(recorded.contains("[REDACTED:aws_access_key]"), "{recorded}");
    assert!(
        !recorded.contains(FAKE_AWS_KEY) && !recorded.contains(UPSTREAM_TOKEN),
        "{recorded}"
    );
    // (The SDK server puts the text in both content and structuredContent: two of each.)
    let masking = leaks[0]["outcome"]["masking"].as_object().unwrap();
    assert_eq!(
        masking.keys().collect::<Vec<_>>(),
        ["aws_access_key", "bound_secret"],
        "{}",
        leaks[0]
    );
    assert!(masking.values().all(|n| n.as_u64().unwrap() >= 1));

    // Search: filters, time windows, pagination, and the listing's receipt.
    let session = e["session"]["enforcer_session"]
        .as_str()
        .unwrap()
        .to_string();
    let all = m.search(&["--session", &session]);
    assert!(
        all.len() >= 6,
        "initialize, tools/list and 4 calls: {all:?}"
    );
    assert!(all.iter().any(|r| r["request"]["method"] == "initialize"));
    let listing = m.search(&["--method", "tools/list"]);
    assert_eq!(
        listing[0]["recording"]["hidden_tools"],
        json!(["delete_everything"])
    );
    assert_eq!(m.search(&["--outcome", "denied"]).len(), 2);
    assert_eq!(
        m.search(&["--agent", "sdk-agent", "--since", "10m"]).len(),
        all.len()
    );
    assert!(m.search(&["--until", "1h"]).is_empty());
    assert!(m.search(&["--agent", "nobody"]).is_empty());
    let page1 = m.host.cli_json(&[
        "audit",
        "search",
        "--json",
        "--session",
        &session,
        "--limit",
        "2",
    ]);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a full page has a cursor");
    let page2 = m.host.cli_json(&[
        "audit",
        "search",
        "--json",
        "--session",
        &session,
        "--limit",
        "2",
        "--cursor",
        cursor,
    ]);
    let ids = |p: &Value| -> Vec<String> {
        p["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (ids(&page1), ids(&page2));
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    assert!(
        a.iter().all(|x| !b.contains(x)),
        "pages do not overlap: {a:?} {b:?}"
    );
    assert_eq!(
        a[0],
        ids(&json!({"receipts": all.clone()}))[0],
        "newest first"
    );

    // Replay: the session's recording in order, redacted.
    let replay = m.host.cli_json(&["audit", "replay", &session, "--json"]);
    let seqs: Vec<u64> = replay["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The human ticket names every section of the drill.
    let text = m.host.enforcer(&["audit", "show", &receipt_id]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    for needle in [
        "no-destructive-tools",
        "destructive_tool",
        "note:",
        "sdk-agent",
        "mcp-test",
        "environment test",
        "protocol session",
        "denied",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }

    // The canary secrets appear nowhere: receipts, CLI output, logs.
    let dump = m
        .host
        .enforcer(&["audit", "search", "--json", "--limit", "1000"]);
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    let log = std::fs::read_to_string(m.host.dir.join("daemon.log")).unwrap();
    for secret in [UPSTREAM_TOKEN, FAKE_AWS_KEY, AGENT_TOKEN] {
        assert!(!dump.contains(secret), "{secret} in receipts");
        assert!(!text.contains(secret), "{secret} in CLI output");
        assert!(!log.contains(secret), "{secret} in the daemon log");
    }
}

#[test]
fn approvals_defaults_and_shadow_mode() {
    let m = setup_with_drill_policy("audit-approval", "", "");
    // whoami needs an approval for this agent; echo is allowed; anything else: default deny.
    let out = m.client_as(
        "approval-agent",
        "a1",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            "whoami",
            "echo:hi",
            r#"slow_count:{"n":1,"delay_ms":1}"#,
        ],
    );
    let who = call(&out, "whoami", 0);
    assert_eq!(who["code"], -32004, "{who}");
    assert_eq!(who["data"]["reason_code"], "identity_disclosure");
    assert_eq!(who["data"]["rule"], "whoami-needs-approval");
    assert_eq!(call(&out, "echo", 0)["result"], "hi");
    let slow = call(&out, "slow_count", 0);
    assert_eq!(slow["code"], -32003, "{slow}");
    assert_eq!(slow["data"]["reason_code"], "default_deny");
    assert!(slow["data"]["rule"].is_null(), "no rule matched: {slow}");
    let tools = find(&out, "tools")["tools"].as_array().unwrap().clone();
    assert!(
        !tools.contains(&json!("slow_count")) && tools.contains(&json!("echo")),
        "tools this agent can never call are hidden: {tools:?}"
    );
    let r = show(&m, who["data"]["receipt"].as_str().unwrap());
    assert_eq!(r["outcome"]["status"], "approval_required");
    assert_eq!(r["policy"]["decision"], "require_approval");
    drop(m);

    // Shadow mode: the same policy evaluated and recorded, nothing enforced.
    let m = setup_with_drill_policy("audit-shadow", "mode = \"shadow\"", "");
    let out = m.client(
        "sh1",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            r#"delete_everything:{"confirm":true}"#,
        ],
    );
    assert_eq!(
        call(&out, "delete_everything", 0)["result"],
        "deleted",
        "{out:?}"
    );
    let tools = find(&out, "tools")["tools"].as_array().unwrap().clone();
    assert!(tools.contains(&json!("delete_everything")), "{tools:?}");
    let r = &m.search(&["--tool", "delete_everything"])[0];
    assert_eq!(r["outcome"]["status"], "ok");
    assert_eq!(r["policy"]["decision"], "allow");
    assert_eq!(r["policy"]["shadow_decision"], "deny");
    assert_eq!(r["policy"]["rule"], "no-destructive-tools");
}

#[test]
fn policy_versions_load_history_diff_and_rollback_on_a_live_daemon() {
    let m = setup_with_drill_policy("audit-policy", "", "");
    let h = &m.host;
    let hist = h.cli_json(&["policy", "history", "--json"]);
    assert_eq!(hist["active"], "v1");
    assert!(hist["versions"][0]["loaded_by"]
        .as_str()
        .unwrap()
        .contains("config file"));

    // A new version that blocks whoami, loaded while the daemon serves.
    let base = std::fs::read_to_string(policy_file("drill.cedar")).unwrap();
    let v2 = h.dir.join("v2.cedar");
    std::fs::write(
        &v2,
        format!(
            "{base}\n@id(\"no-whoami\")\n@reason(\"incident_lockdown\")\n@note(\"whoami is off during the incident\")\nforbid(principal, action == Action::\"tools/call\", resource == Tool::\"whoami\");\n"
        ),
    )
    .unwrap();
    let loaded = h.cli_json(&["policy", "load", v2.to_str().unwrap(), "--json"]);
    assert_eq!(loaded["version"]["id"], "v2");
    assert!(loaded["version"]["loaded_by"]
        .as_str()
        .unwrap()
        .contains("uid 0"));
    let out = m.client("p1", URL, &["--mode", "legacy", "--calls", "whoami"]);
    assert_eq!(
        call(&out, "whoami", 0)["data"]["rule"],
        "no-whoami",
        "{out:?}"
    );

    let hist = h.cli_json(&["policy", "history", "--json"]);
    assert_eq!(hist["active"], "v2");
    let ids: Vec<&str> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["v2", "v1"], "newest first");
    let diff = h.cli_json(&["policy", "diff", "v1", "v2", "--json"]);
    assert_eq!(diff["diff"]["rules_added"], json!(["no-whoami"]));
    assert_eq!(diff["diff"]["rules_removed"], json!([]));
    assert!(diff["diff"]["unified"]
        .as_str()
        .unwrap()
        .contains("+@id(\"no-whoami\")"));
    let shown = h.cli_json(&["policy", "show", "v2", "--json"]);
    assert!(shown["source"].as_str().unwrap().contains("no-whoami"));

    // A bad policy is refused with file:line:col, and the active version stays.
    let bad = h.dir.join("bad.cedar");
    std::fs::write(
        &bad,
        "@id(\"ok\")\npermit(principal, action, resource);\n\n@id(\"broken\")\nforbid(principal, action == Action::\"tools/call\", resource)\nwhen { resource.name like };\n",
    )
    .unwrap();
    let refused = h.enforcer(&["policy", "load", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        err.contains(&format!("{}:6:", bad.display())),
        "line of the error: {err}"
    );
    let check = h.enforcer(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains(":6:"));
    assert_eq!(h.cli_json(&["policy", "history", "--json"])["active"], "v2");

    // Rollback: v1 in force again, whoami allowed, the activation recorded.
    let back = h.cli_json(&["policy", "activate", "v1", "--json"]);
    assert_eq!(back["version"]["id"], "v1");
    let out = m.client("p2", URL, &["--mode", "legacy", "--calls", "whoami"]);
    assert!(call(&out, "whoami", 0)["result"].is_string(), "{out:?}");
    let hist = h.cli_json(&["policy", "history", "--json"]);
    assert_eq!(hist["active"], "v1");
    assert!(hist["activations"].as_array().unwrap().len() >= 3, "{hist}");

    // Decision cases: a dry run against stated requests, exit 4 on a failing case.
    let cases = h.dir.join("cases.toml");
    std::fs::write(
        &cases,
        format!(
            "policy = \"{}\"\nenvironment = \"test\"\n\n[[case]]\nname = \"deletes are blocked\"\nagent = \"sdk-agent\"\nconnector = \"mcp-test\"\ntool = \"delete_everything\"\narguments = {{ confirm = true }}\nexpect = \"deny\"\nexpect_rule = \"no-destructive-tools\"\n\n[[case]]\nname = \"echo of /etc is blocked\"\nagent = \"sdk-agent\"\nconnector = \"mcp-test\"\ntool = \"echo\"\narguments = {{ text = \"/etc/shadow\" }}\nexpect = \"deny\"\nexpect_reason = \"sensitive_path\"\n",
            policy_file("drill.cedar").display()
        ),
    )
    .unwrap();
    let ok = h.cli_json(&["policy", "test", cases.to_str().unwrap(), "--json"]);
    assert_eq!(ok["results"].as_array().unwrap().len(), 2, "{ok}");
    let mut text = std::fs::read_to_string(&cases).unwrap();
    text.push_str("\n[[case]]\nname = \"wrong on purpose\"\nagent = \"sdk-agent\"\nconnector = \"mcp-test\"\ntool = \"echo\"\narguments = { text = \"hi\" }\nexpect = \"deny\"\n");
    std::fs::write(&cases, text).unwrap();
    let failing = h.enforcer(&["policy", "test", cases.to_str().unwrap()]);
    assert_eq!(failing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&failing.stdout).contains("wrong on purpose"));
}

#[test]
fn receipts_survive_restarts_and_tampering_is_detected() {
    let mut m = setup_with_drill_policy("audit-tamper", "", "");
    let out = m.client(
        "x1",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            "echo:one",
            "echo:two",
            "echo:three",
        ],
    );
    assert_eq!(call(&out, "echo", 2)["result"], "three");
    let before = m.search(&[]);
    assert!(before.len() >= 5, "{before:?}");
    let verify = m.host.cli_json(&["audit", "verify", "--json"]);
    assert_eq!(verify["ok"], true, "{verify}");

    // Stopped daemon: the CLI reads the store itself, and says so.
    m.host.stop_daemon();
    let offline = m.host.enforcer(&["audit", "search", "--json"]);
    assert!(offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stderr).contains("not running"));
    let offline: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(offline["receipts"].as_array().unwrap().len(), before.len());

    // Restart: the same receipts, and the chain continues.
    m.host.start_daemon();
    let out = m.client("x2", URL, &["--mode", "legacy", "--calls", "echo:four"]);
    assert_eq!(call(&out, "echo", 0)["result"], "four");
    assert!(m.search(&[]).len() > before.len());
    assert_eq!(m.host.cli_json(&["audit", "verify", "--json"])["ok"], true);

    // Tamper with the receipts log (one line of a segment file).
    m.host.stop_daemon();
    let log = m.host.dir.join("state/receipts");
    let target = before[before.len() - 2]["seq"].as_u64().unwrap();
    tamper(&log, target, |record| {
        record["record"]["outcome"]["status"] = json!("ok-but-forged");
    });
    let report = m.host.enforcer(&["audit", "verify", "--json"]);
    assert_eq!(report.status.code(), Some(4), "tampering is an exit code");
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let problems = report["report"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["kind"] == "changed" && p["seq"] == json!(target)),
        "{report}"
    );
    let text = m.host.enforcer(&["audit", "verify"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("AUDIT CHAIN BROKEN"));
}

/// Rewrite the stored entry with sequence `seq` (a line of a segment file of the receipts
/// log, as an editor with write access to the state directory would).
fn tamper(log: &std::path::Path, seq: u64, edit: impl FnOnce(&mut Value)) {
    let mut segments: Vec<_> = std::fs::read_dir(log)
        .expect("the receipts log")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    for path in segments {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let Some(i) = lines
            .iter()
            .position(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["seq"] == json!(seq)))
        else {
            continue;
        };
        let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
        edit(&mut v);
        lines[i] = serde_json::to_string(&v).unwrap();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        return;
    }
    panic!("no entry with seq {seq} in {}", log.display());
}

#[test]
fn strict_mode_loses_no_receipt_of_an_answer_the_agent_got_when_killed() {
    let mut m = setup_with_drill_policy("audit-strict", "", "[audit]\ndurability = \"strict\"\n");
    let mut client = m
        .client_cmd(
            "k1",
            URL,
            &[
                "--mode",
                "legacy",
                "--echo-loop",
                "100000",
                "--echo-prefix",
                "strict",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let acks = acks.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(a) = v["ack"].as_str() {
                        acks.lock().unwrap().push(a.to_string());
                    }
                }
            }
        })
    };
    // Under load: kill -9 once a few hundred calls have been answered.
    wait_for(Duration::from_secs(60), || {
        acks.lock().unwrap().len() >= 200
    })
    .expect("the client got answers");
    m.host.kill_daemon();
    let _ = client.wait();
    reader.join().unwrap();
    let acked = acks.lock().unwrap().clone();
    assert!(acked.len() >= 200);

    m.host.start_daemon();
    let mut recorded = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec![
            "audit", "search", "--json", "--tool", "echo", "--limit", "500",
        ];
        if let Some(c) = &cursor {
            args.push("--cursor");
            args.push(c);
        }
        let page = m.host.cli_json(&args);
        for r in page["receipts"].as_array().unwrap() {
            if r["outcome"]["status"] == "ok" {
                if let Some(t) = r["request"]["arguments_redacted"]["text"].as_str() {
                    recorded.insert(t.to_string());
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let missing: Vec<&String> = acked.iter().filter(|a| !recorded.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no receipt after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(m.host.cli_json(&["audit", "verify", "--json"])["ok"], true);
}

#[test]
fn a_revocation_mid_stream_leaves_a_kill_receipt_and_the_cut_call_recorded() {
    let m = setup_with_drill_policy("audit-revoke", "", "");
    let mut agent = m
        .client_cmd(
            "rv1",
            URL,
            &["--mode", "legacy", "--calls", "slow_count:40:250"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = enforcer_tests::lines(&mut agent);
    enforcer_tests::read_until(&mut out, |v| v.get("progress").is_some())
        .expect("the streaming call is under way");
    let rev = m.host.enforcer(&[
        "revoke",
        "--agent",
        "sdk-agent",
        "--reason",
        "test: suspected exfiltration",
        "--yes",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    let _ = agent.wait();

    let mut kills = Vec::new();
    wait_for(Duration::from_secs(10), || {
        kills = m.search(&["--outcome", "killed"]);
        !kills.is_empty()
    })
    .expect("a revocation_kill receipt");
    let k = &kills[0];
    assert_eq!(k["kind"], "connection");
    assert_eq!(k["event"]["event"], "revocation_kill");
    assert_eq!(k["actor"]["agent"], "sdk-agent");
    assert_eq!(k["connector"]["connector"], "mcp-test");
    assert!(k["event"]["detail"]
        .as_str()
        .unwrap()
        .contains("test: suspected exfiltration"));
    // The call that was cut has its own receipt saying it never completed.
    let mut cut = Vec::new();
    wait_for(Duration::from_secs(10), || {
        cut = m.search(&["--tool", "slow_count"]);
        !cut.is_empty()
    })
    .expect("the cut call's receipt");
    assert_ne!(cut[0]["outcome"]["status"], "ok", "{}", cut[0]);
}

#[test]
fn arguments_carrying_a_blocked_detector_are_refused_before_they_leave() {
    let m = setup_with_drill_policy(
        "audit-dlp",
        "",
        "[dlp]\narguments = \"record\"\n[dlp.detectors.aws_access_key]\narguments = \"block\"\n",
    );
    let out = m.client(
        "dl1",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            &format!("echo:key {FAKE_AWS_KEY}"),
            "echo:mail me at dev@example.com",
        ],
    );
    let blocked = call(&out, "echo", 0);
    assert_eq!(blocked["code"], -32003, "{blocked}");
    assert_eq!(blocked["data"]["reason_code"], "dlp_block");
    assert_eq!(blocked["data"]["rule"], "dlp:aws_access_key");
    assert_eq!(blocked["data"]["detectors"], json!(["aws_access_key"]));
    // A detector set to record lets the call through and counts it.
    assert_eq!(
        call(&out, "echo", 1)["result"],
        "mail me at [REDACTED:email]"
    );
    let r = show(&m, blocked["data"]["receipt"].as_str().unwrap());
    assert_eq!(r["outcome"]["status"], "dlp_blocked");
    assert_eq!(r["outcome"]["masking"]["aws_access_key"], 1);
    let args = r["request"]["arguments_redacted"].to_string();
    assert!(
        !args.contains(FAKE_AWS_KEY),
        "arguments stored redacted: {args}"
    );
    let recorded = m.search(&["--tool", "echo", "--outcome", "ok"]);
    // Counted in the arguments (recorded, forwarded) and in the echoed result (redacted).
    assert!(
        recorded[0]["outcome"]["masking"]["email"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{}",
        recorded[0]
    );
}
