//! The incident-response side of the admin API with real traffic: impact preview, revocation
//! with a required reason and a typed confirmation, dry runs, the admin log, and break-glass
//! revocations with the daemon stopped (issue: admin socket and incident CLI).

use std::time::Duration;

use enforcer_tests::{lines, mcp::setup_with_drill_policy, read_until, wait_for};
use serde_json::Value;

const URL: &str = "https://mcp.test:8443/mcp";

#[test]
fn revocation_previews_its_impact_needs_a_reason_and_a_typed_confirmation_and_is_logged() {
    let m = setup_with_drill_policy("admin-revoke", "", "");
    let h = &m.host;
    let mut agent = m
        .client_cmd(
            "a1",
            URL,
            &["--mode", "legacy", "--calls", "slow_count:60:250"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = lines(&mut agent);
    read_until(&mut out, |v| v.get("progress").is_some()).expect("streaming call under way");

    // The preview: sessions, instances, bindings, connectors and live flows.
    let impact = h.cli_json(&["impact", "--agent", "sdk-agent", "--json"]);
    assert!(
        !impact["sessions"].as_array().unwrap().is_empty(),
        "{impact}"
    );
    assert!(impact["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["instance"] == "a1"));
    assert!(
        impact["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == "mcp-token"),
        "{impact}"
    );
    assert_eq!(impact["connectors"], serde_json::json!(["mcp-test"]));
    assert!(
        impact["flows"]["agent_sockets"].as_u64().unwrap() >= 1,
        "{impact}"
    );
    assert!(
        impact["flows"]["proxy_legs"].as_u64().unwrap() >= 2,
        "{impact}"
    );
    let text = String::from_utf8_lossy(&h.enforcer(&["impact", "--agent", "sdk-agent"]).stdout)
        .to_string();
    assert!(
        text.contains("live flows") && text.contains("mcp-token@v3"),
        "{text}"
    );

    // Agents and bindings, live.
    let agents = h.cli_json(&["agents", "--json"]);
    let sdk = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "sdk-agent")
        .expect("sdk-agent listed")
        .clone();
    assert_eq!(sdk["revoked"], false);
    assert!(sdk["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["instance"] == "a1" && !i["sessions"].as_array().unwrap().is_empty()));
    let bindings = h.enforcer(&["bindings", "--json"]);
    let text = String::from_utf8_lossy(&bindings.stdout).to_string();
    assert!(
        !text.contains(enforcer_tests::mcp::UPSTREAM_TOKEN),
        "never the secret"
    );
    let bindings: Value = serde_json::from_str(&text).unwrap();
    let b = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "mcp-token")
        .expect("mcp-token listed")
        .clone();
    assert_eq!(b["reference"], "mcp-token@v3");
    assert_eq!(b["connector"], "mcp-test");
    assert_eq!(b["usable"], true, "{b}");

    // No reason: a usage error. Dry run and a wrong confirmation: nothing changes.
    let no_reason = h.enforcer(&["revoke", "--agent", "sdk-agent"]);
    assert_eq!(no_reason.status.code(), Some(2));
    let dry = h.enforcer(&[
        "revoke",
        "--agent",
        "sdk-agent",
        "--reason",
        "x",
        "--dry-run",
    ]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    let wrong = h.enforcer_with_input(
        &["revoke", "--agent", "sdk-agent", "--reason", "incident 7"],
        "sdk-agnet\n",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not confirmed"));
    assert!(
        h.status()["revocations"].as_array().unwrap().is_empty(),
        "nothing revoked yet"
    );
    assert!(
        read_until(&mut out, |v| v.get("progress").is_some()).is_some(),
        "the call still streams"
    );

    // Typed confirmation: revoked through the daemon; the stream is cut.
    let rev = h.enforcer_with_input(
        &[
            "revoke",
            "--agent",
            "sdk-agent",
            "--reason",
            "incident 7",
            "--json",
        ],
        "sdk-agent\n",
    );
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    let rev: Value = serde_json::from_slice(
        String::from_utf8_lossy(&rev.stdout)
            .lines()
            .last()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    // The in-flight call got an error saying why (the protocol-level end comes before the
    // kernel's socket kill, which destroys whatever the agent still holds).
    let end = read_until(&mut out, |v| {
        v.get("call").is_some() || v.get("error").is_some()
    })
    .expect("the agent heard about its call");
    assert_eq!(end["data"]["reason_code"], "revoked", "{end}");
    assert_eq!(end["code"], -32006, "{end}");
    // Nothing of the agent is left live on either leg.
    let after = h.cli_json(&["impact", "--agent", "sdk-agent", "--json"]);
    assert_eq!(after["flows"]["agent_sockets"], 0, "{after}");
    assert_eq!(after["flows"]["proxy_legs"], 0, "{after}");
    assert_eq!(after["already_revoked"], true, "{after}");
    assert!(
        !rev["sessions_ended"].as_array().unwrap().is_empty(),
        "{rev}"
    );
    let _ = agent.wait();
    let agents = h.cli_json(&["agents", "--json"]);
    assert!(agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent"] == "sdk-agent" && a["revoked"] == true));

    // The admin log says who, what, on what, why, what it touched and how it went.
    let log = h.cli_json(&["admin-log", "--json"]);
    let r = &log["records"][0];
    assert_eq!(r["action"], "revoke", "{log}");
    assert_eq!(r["target"], "agent sdk-agent");
    assert_eq!(r["who"]["uid"], 0);
    assert_eq!(r["who"]["user"], "root");
    assert_eq!(r["reason"], "incident 7");
    assert_eq!(r["mode"], "daemon");
    assert_eq!(r["result"], "ok");
    assert_eq!(r["affected"], rev["sessions_ended"]);
    assert!(r["details"]["kill"]["elapsed"].as_u64().is_some(), "{r}");
    assert_eq!(r["id"], rev["admin_record"]);

    // Reinstating is recorded too; the chain verifies.
    let re = h.enforcer(&["reinstate", "--agent", "sdk-agent", "--reason", "contained"]);
    assert!(
        re.status.success(),
        "{}",
        String::from_utf8_lossy(&re.stderr)
    );
    let log = h.cli_json(&["admin-log", "--json", "--action", "reinstate"]);
    assert_eq!(log["records"][0]["reason"], "contained");
    let v = h.cli_json(&["admin-log", "--verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let table = String::from_utf8_lossy(&h.enforcer(&["admin-log"]).stdout).to_string();
    assert!(
        table.contains("incident 7") && table.contains("reinstate"),
        "{table}"
    );
}

#[test]
fn break_glass_revocation_with_the_daemon_stopped_is_merged_into_the_admin_log() {
    let mut m = setup_with_drill_policy("admin-breakglass", "", "");
    m.host.stop_daemon();
    let rev = m.host.enforcer(&[
        "revoke",
        "--agent",
        "sdk-agent",
        "--reason",
        "daemon down",
        "--yes",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    assert!(String::from_utf8_lossy(&rev.stderr).contains("BREAK-GLASS"));
    let spool = m.host.dir.join("state/admin-spool.jsonl");
    assert!(spool.exists(), "the admin record is spooled");
    // Enforced at once, daemon or not: the agent cannot connect.
    let status = m.host.status();
    assert_eq!(
        status["revocations"].as_array().unwrap().len(),
        1,
        "{status}"
    );

    m.host.start_daemon();
    let mut log = Value::Null;
    wait_for(Duration::from_secs(5), || {
        log = m.host.cli_json(&["admin-log", "--json"]);
        !log["records"].as_array().unwrap().is_empty()
    })
    .expect("merged");
    let r = &log["records"][0];
    assert_eq!(r["mode"], "break-glass", "{log}");
    assert_eq!(r["action"], "revoke");
    assert_eq!(r["reason"], "daemon down");
    assert!(!spool.exists(), "the spool is emptied once merged");
    // The revocation persisted across the restart: the agent is still refused.
    let out = m.client("bg1", URL, &["--mode", "legacy", "--calls", "echo:x"]);
    assert!(
        out.iter().all(|l| l.get("call").is_none()),
        "a revoked agent makes no call: {out:?}"
    );
}

#[test]
fn terminating_sessions_cuts_the_call_closes_the_server_session_and_answers_404_to_the_old_id() {
    let m = setup_with_drill_policy("admin-terminate", "", "");
    let h = &m.host;
    let mut agent = m
        .client_cmd(
            "t1",
            URL,
            &["--mode", "legacy", "--calls", "slow_count:60:250"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = lines(&mut agent);
    read_until(&mut out, |v| v.get("progress").is_some()).expect("streaming call under way");
    let sessions = h.cli_json(&["sessions", "--json"]);
    let s = &sessions["sessions"][0];
    let protocol_id = s["protocol_session_ids"][0]
        .as_str()
        .expect("a session-era id")
        .to_string();

    let no_reason = h.enforcer(&["sessions", "terminate", "--agent", "sdk-agent"]);
    assert_eq!(no_reason.status.code(), Some(2), "a reason is required");
    let t = h.cli_json(&[
        "sessions",
        "terminate",
        "--agent",
        "sdk-agent",
        "--reason",
        "test: contain",
        "--json",
    ]);
    assert_eq!(t["terminated"][0], s["id"], "{t}");
    assert!(
        t["upstream_deletes"].as_u64().unwrap() >= 1,
        "server session closed: {t}"
    );
    assert_eq!(t["kill"]["failed"], 0, "{t}");
    // The in-flight call is cut with a proper JSON-RPC error naming why, not a dropped
    // connection.
    let end = read_until(&mut out, |v| {
        v.get("call").is_some() || v.get("error").is_some()
    })
    .expect("the agent heard about its call");
    assert!(
        end.get("result").is_none(),
        "the call did not complete: {end}"
    );
    assert_eq!(
        end["call"], "slow_count",
        "an error for the call itself: {end}"
    );
    assert_eq!(end["code"], -32006, "{end}");
    assert_eq!(end["data"]["reason_code"], "session_terminated", "{end}");
    let _ = agent.wait();
    // No proxy leg of the terminated session lingers (closed at the protocol level, or
    // destroyed by the kernel kill that follows).
    let after = h.cli_json(&["impact", "--agent", "sdk-agent", "--json"]);
    assert_eq!(after["flows"]["proxy_legs"], 0, "{after}");

    // A client that insists on the old session id gets 404 with a JSON-RPC error.
    let up = h.up_v4.to_string();
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"again"}}}"#;
    let header = format!("Mcp-Session-Id: {protocol_id}");
    let resolve = format!("mcp.test:8443:{up}");
    let out = h
        .exec_cmd(
            "sdk-agent",
            "stubborn",
            &[
                // (a transfer error is retried; an HTTP status never is, without --fail)
                "curl",
                "-sS",
                "--retry",
                "2",
                "--retry-all-errors",
                "--resolve",
                &resolve,
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "-H",
                &header,
                "-H",
                "MCP-Protocol-Version: 2025-11-25",
                "--data-binary",
                body,
                "-w",
                "\n%{http_code}",
                URL,
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json_body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(
        code.trim(),
        "404",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(
        v["error"]["data"]["reason_code"], "session_terminated",
        "{v}"
    );

    // Not a revocation: a fresh session may start again.
    let again = m.client("t2", URL, &["--mode", "legacy", "--calls", "echo:back"]);
    assert!(
        again
            .iter()
            .any(|l| l["call"] == "echo" && l["result"] == "back"),
        "{again:?}"
    );
    let log = h.cli_json(&["admin-log", "--json", "--action", "terminate"]);
    assert_eq!(log["records"][0]["reason"], "test: contain");
    let receipts = h.cli_json(&["audit", "search", "--json", "--outcome", "killed"]);
    assert!(receipts["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["event"]["event"] == "session_terminated"));
}

#[test]
fn the_drill_walks_the_twelve_steps_from_a_receipt_and_leaves_the_target_dead() {
    let m = setup_with_drill_policy("admin-drill", "", "");
    let h = &m.host;
    let mut agent = m
        .client_cmd(
            "d1",
            URL,
            &[
                "--mode",
                "legacy",
                "--calls",
                r#"delete_everything:{"confirm":true}"#,
                "slow_count:120:250",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = lines(&mut agent);
    let denied = read_until(&mut out, |v| v["call"] == "delete_everything").expect("denied");
    read_until(&mut out, |v| v.get("progress").is_some()).expect("streaming");
    let receipt = denied["data"]["receipt"].as_str().unwrap().to_string();

    // A dry run shows the evidence and the preview, and changes nothing.
    let dry = h.enforcer(&["drill", &receipt, "--dry-run", "--json"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let text = String::from_utf8_lossy(&dry.stdout).to_string();
    for n in 1..=9 {
        assert!(
            text.contains(&format!("Step {n:>2}:")),
            "step {n} in:\n{text}"
        );
    }
    assert!(!text.contains("Step 10:"));
    assert!(h.status()["revocations"].as_array().unwrap().is_empty());

    let run = h.enforcer(&["drill", &receipt, "--yes", "--json"]);
    let text = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for needle in [
        "Step 12:",
        "no-destructive-tools",
        "mcp-token@v3",
        "its flows are dead",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    let report: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(report["flows_dead"], true, "{report}");
    // Whatever the protocol-level end did not close, the kernel destroyed, without failure.
    assert_eq!(report["revocation"]["kill"]["failed"], 0, "{report}");
    // The rehearsal target's stream is cut; the admin log names the drill.
    let end = read_until(&mut out, |v| {
        v.get("call").is_some() || v.get("error").is_some()
    });
    assert!(
        end.as_ref().is_none_or(|e| e.get("result").is_none()),
        "{end:?}"
    );
    let _ = agent.wait();
    let log = h.cli_json(&["admin-log", "--json"]);
    assert!(log["records"][0]["reason"]
        .as_str()
        .unwrap()
        .contains(&receipt));
}

/// Last JSON document a command printed (the CLI may print a preview before it).
fn last_json(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn echo_ok(lines: &[Value]) -> bool {
    lines
        .iter()
        .any(|l| l["call"] == "echo" && l["result"] == "hi")
}

#[test]
fn every_scope_previews_revokes_and_lifts_bindings_connectors_users_and_disabled_agents() {
    let mut m = setup_with_drill_policy("admin-scopes", "", "");
    let call = |m: &enforcer_tests::mcp::McpHost, instance: &str| {
        m.client(instance, URL, &["--mode", "legacy", "--calls", "echo:hi"])
    };
    let h = &m.host;
    assert!(echo_ok(&call(&m, "s0")), "a call works before anything");
    let sessions = h.cli_json(&["sessions", "--json"]);
    let session = sessions["sessions"][0]["id"].as_str().unwrap().to_string();

    // Show forms: one item in full, human and JSON; never the secret.
    let shown = h.cli_json(&["sessions", "show", &session, "--json"]);
    assert_eq!(shown["session"]["id"], session.as_str());
    assert_eq!(shown["binding"], "mcp-token@v3", "{shown}");
    assert_eq!(shown["connector"]["id"], "mcp-test");
    assert!(
        !shown["recent_receipts"].as_array().unwrap().is_empty(),
        "{shown}"
    );
    let text =
        String::from_utf8_lossy(&h.enforcer(&["sessions", "show", &session]).stdout).to_string();
    assert!(
        text.contains("idle limit ms") && text.contains("mcp-token@v3"),
        "{text}"
    );
    for (kind, id, expect) in [
        ("connectors", "mcp-test", "backend"),
        ("bindings", "mcp-token", "mcp-token@v3"),
        ("agents", "sdk-agent", "enabled"),
    ] {
        let out = h.enforcer(&[kind, "show", id]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && text.contains(expect),
            "{kind}: {text}"
        );
        assert!(!text.contains(enforcer_tests::mcp::UPSTREAM_TOKEN));
        let v = h.cli_json(&[kind, "show", id, "--json"]);
        assert!(v.is_object(), "{kind}: {v}");
    }
    let missing = h.enforcer(&["connectors", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(5), "not found is exit 5");

    // Impact for every scope, changing nothing.
    let by_session = h.cli_json(&["impact", "--session", &session, "--json"]);
    assert_eq!(by_session["scope"], "session");
    assert_eq!(by_session["sessions"].as_array().unwrap().len(), 1);
    let by_connector = h.cli_json(&["impact", "--connector", "mcp-test", "--json"]);
    assert_eq!(by_connector["connectors"], serde_json::json!(["mcp-test"]));
    assert!(by_connector["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["id"] == "mcp-token"));
    assert!(!by_connector["sessions"].as_array().unwrap().is_empty());
    let by_binding = h.cli_json(&["impact", "--binding", "mcp-token", "--json"]);
    assert_eq!(by_binding["bindings"][0]["reference"], "mcp-token@v3");
    assert!(by_binding["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "sdk-agent"));
    let by_user = h.cli_json(&["impact", "--user", "root", "--json"]);
    assert_eq!(by_user["scope"], "user");
    assert!(
        by_user["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "sdk-agent"),
        "{by_user}"
    );
    let text = String::from_utf8_lossy(&h.enforcer(&["impact", "--binding", "mcp-token"]).stdout)
        .to_string();
    assert!(
        text.contains("Impact of revoking binding mcp-token"),
        "{text}"
    );
    let unknown = h.enforcer(&["revoke", "--binding", "nope", "--reason", "x", "--yes"]);
    assert_eq!(unknown.status.code(), Some(5), "unknown binding: not found");
    assert!(
        h.status()["revocations"].as_array().unwrap().is_empty(),
        "previews changed nothing"
    );

    // A revoked binding: its secret is no longer injected; calls are refused with a reason.
    let rev = h.enforcer(&[
        "revoke",
        "--binding",
        "mcp-token",
        "--reason",
        "leaked token",
        "--yes",
        "--json",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    assert_eq!(last_json(&rev)["target"]["scope"], "binding");
    let refused = call(&m, "s1");
    let err = refused
        .iter()
        .find(|l| l.get("error").is_some())
        .unwrap_or_else(|| panic!("refused: {refused:?}"));
    assert_eq!(err["data"]["reason_code"], "credential_revoked", "{err}");
    let b = h.cli_json(&["bindings", "show", "mcp-token", "--json"]);
    assert_eq!(b["state"], "revoked");
    assert_eq!(b["usable"], false);
    let lift = h.enforcer(&["reinstate", "--binding", "mcp-token", "--reason", "rotated"]);
    assert!(lift.status.success());
    assert!(echo_ok(&call(&m, "s2")), "the binding works again");

    // A disabled connector: new flows refused with a reason, recorded; live sessions ended.
    let rev = h.enforcer(&[
        "revoke",
        "--connector",
        "mcp-test",
        "--reason",
        "server compromised",
        "--yes",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    let refused = call(&m, "s3");
    assert!(
        refused
            .iter()
            .any(|l| l["data"]["reason_code"] == "connector_disabled"),
        "{refused:?}"
    );
    let c = h.cli_json(&["connectors", "show", "mcp-test", "--json"]);
    assert_eq!(c["state"], "disabled", "{c}");
    // It persists: a restarted daemon still refuses the connector.
    m.host.stop_daemon();
    m.host.start_daemon();
    let h = &m.host;
    let refused = call(&m, "s3b");
    assert!(
        refused
            .iter()
            .any(|l| l["data"]["reason_code"] == "connector_disabled"),
        "after a restart: {refused:?}"
    );
    let receipts = h.cli_json(&["audit", "search", "--json", "--outcome", "refused"]);
    assert!(
        receipts["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["event"]["event"] == "connector_disabled"),
        "{receipts}"
    );
    assert!(h
        .enforcer(&[
            "reinstate",
            "--connector",
            "mcp-test",
            "--reason",
            "rebuilt"
        ])
        .status
        .success());
    assert!(echo_ok(&call(&m, "s4")), "the connector works again");

    // A disabled agent: distinct command and state, refuses instances started later; enable.
    let dis = h.enforcer(&[
        "disable",
        "--agent",
        "sdk-agent",
        "--reason",
        "runaway",
        "--yes",
    ]);
    assert!(
        dis.status.success(),
        "{}",
        String::from_utf8_lossy(&dis.stderr)
    );
    assert!(String::from_utf8_lossy(&dis.stdout).contains("disabled agent sdk-agent"));
    let a = h.cli_json(&["agents", "show", "sdk-agent", "--json"]);
    assert_eq!(a["state"], "disabled");
    assert!(
        !echo_ok(&call(&m, "s5")),
        "a new instance of a disabled agent is refused"
    );
    assert!(h
        .enforcer(&["enable", "--agent", "sdk-agent", "--reason", "fixed"])
        .status
        .success());
    assert!(echo_ok(&call(&m, "s6")), "enabled again");

    // A revoked user: the kernel refuses every agent process running as that uid.
    let rev = h.enforcer(&[
        "revoke",
        "--user",
        "root",
        "--reason",
        "account breach",
        "--yes",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    assert!(!echo_ok(&call(&m, "s7")), "the user's agents are refused");
    assert!(h.status()["counters"]["refused_revoked"].as_u64().unwrap() >= 1);
    assert!(h
        .enforcer(&["reinstate", "--user", "0", "--reason", "password reset"])
        .status
        .success());
    assert!(echo_ok(&call(&m, "s8")), "the user's agents work again");

    // Every action is in the admin log with its own name.
    let log = h.cli_json(&["admin-log", "--json"]);
    let actions: Vec<(String, String)> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("revoke", "binding mcp-token"),
        ("reinstate", "binding mcp-token"),
        ("revoke", "connector mcp-test"),
        ("disable", "agent sdk-agent"),
        ("enable", "agent sdk-agent"),
        ("revoke", "user root (uid 0)"),
        ("reinstate", "user root (uid 0)"),
    ] {
        assert!(
            actions.iter().any(|(a, t)| a == want.0 && t == want.1),
            "{want:?} in {actions:?}"
        );
    }
}

#[test]
fn the_simulated_drill_rehearses_on_a_private_setup_and_cleans_up() {
    let out = std::process::Command::new(enforcer_tests::bin("enforcer"))
        .args(["drill", "--simulate", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let r = &report["rehearsal"];
    assert_eq!(r["passed"], true, "{report}");
    assert_eq!(r["streaming_call"]["code"], -32006, "{r}");
    assert_eq!(r["streaming_call"]["data"]["reason_code"], "revoked", "{r}");
    assert!(r["reconnect_attempts"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["reconnects_succeeded"], 0, "{r}");
    assert_eq!(report["flows_dead"], true, "{report}");
    // The twelve steps were walked on the rehearsal's denial, and the agent's developer saw
    // the diagnostics.
    for needle in [
        "Step 12",
        "rule no-destructive-tools",
        "binding rehearsal-token@v1",
        "\"reason_code\":\"destructive_tool\"",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    // Nothing of it is left on the host.
    let id = "enforcer-rehearsal-";
    let cgroups = enforcer_tests::cgroup2_mount();
    for dir in [
        &*cgroups.to_string_lossy(),
        "/sys/fs/bpf",
        &std::env::temp_dir().to_string_lossy(),
    ] {
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(id))
            .collect();
        assert!(left.is_empty(), "left in {dir}: {left:?}");
    }
}
