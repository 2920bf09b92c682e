//! The TLS-terminating MCP proxy, end to end through the kernel redirect, with the official
//! MCP Python SDK (PyPI `mcp` 2.x, tests/peers) as both client and server over real TLS.
//!
//! The upstream MCP server runs in the test host's upstream namespace with a certificate from
//! a test CA the connector trusts, and demands a bearer token only the enforcer holds: the
//! agent sends its own token, so every successful call proves the injection replaced it.

use std::time::Duration;

use enforcer_tests::{
    bin, json_lines, lines,
    mcp::{setup, AGENT_TOKEN, API_KEY, ROUTE_SOURCE_HOST, UPSTREAM_TOKEN},
    read_until, sha256_hex, wait_for, TestHost,
};
use serde_json::{json, Value};

fn find<'a>(out: &'a [Value], key: &str) -> &'a Value {
    out.iter()
        .find(|v| v.get(key).is_some())
        .unwrap_or_else(|| panic!("no {key:?} line in {out:?}"))
}

fn call<'a>(out: &'a [Value], tool: &str) -> &'a Value {
    out.iter()
        .find(|v| v["call"] == tool)
        .unwrap_or_else(|| panic!("no call {tool:?} in {out:?}"))
}

#[test]
fn session_era_round_trips_with_the_credential_injected_and_headers_preserved() {
    let m = setup("mcp-session", "");
    let out = m.client(
        "s1",
        "https://mcp.test:8443/mcp",
        &[
            "--mode",
            "legacy",
            "--token",
            AGENT_TOKEN,
            "--calls",
            "echo:hello",
            "whoami",
        ],
    );
    let connected = &find(&out, "connected")["connected"];
    assert_eq!(connected["era"], "session", "{out:?}");
    let tools = find(&out, "tools")["tools"].as_array().unwrap().clone();
    for t in [
        "echo",
        "slow_count",
        "whoami",
        "leak_secret",
        "delete_everything",
    ] {
        assert!(tools.contains(&json!(t)), "{tools:?}");
    }
    assert_eq!(call(&out, "echo")["result"], "hello");
    let who: Value =
        serde_json::from_str(call(&out, "whoami")["result"].as_str().unwrap()).unwrap();
    let h = &who["headers"];
    assert_eq!(h["host"], "mcp.test:8443", "Host preserved: {h}");
    assert_eq!(
        who["digests"]["authorization"],
        sha256_hex(&format!("Bearer {UPSTREAM_TOKEN}")),
        "agent token replaced by the bound credential: {who}"
    );
    assert_eq!(
        h["authorization"], "Bearer [REDACTED:bound_secret]",
        "the bound secret never reaches the agent, even echoed back by a tool: {h}"
    );
    assert!(
        h["mcp-session-id"].is_string(),
        "session id passed through: {h}"
    );
    assert!(h["mcp-protocol-version"].is_string(), "{h}");

    let fwd = m.forwarded_lines();
    let tool_call = fwd
        .iter()
        .find(|l| l["fields"]["tool"] == "whoami")
        .unwrap_or_else(|| panic!("no forwarded whoami: {fwd:?}"));
    assert_eq!(tool_call["fields"]["credential_mode"], "Inject");
    assert_eq!(tool_call["fields"]["binding"], "mcp-token@v3");
    assert_eq!(tool_call["span"]["agent"], "sdk-agent");
    assert_eq!(tool_call["span"]["sni"], "mcp.test");
    // Responses (here inside SSE streams) are matched to their requests by id: each call's
    // receipt is written when its response passes.
    let recorded: Vec<Value> = m
        .host
        .daemon_log_lines()
        .into_iter()
        .filter(|l| l["fields"]["message"] == "exchange recorded")
        .collect();
    assert!(
        recorded
            .iter()
            .any(|l| l["fields"]["method"] == "tools/call" && l["fields"]["outcome"] == "ok"),
        "{recorded:?}"
    );
    assert!(recorded
        .iter()
        .any(|l| l["fields"]["method"] == "tools/list"));
    // The secret never reaches the logs; neither does the agent's own token.
    let log = std::fs::read_to_string(m.host.dir.join("daemon.log")).unwrap();
    assert!(!log.contains(UPSTREAM_TOKEN) && !log.contains(AGENT_TOKEN));

    // The session registry, from the admin API: one enforcer session for this instance and
    // connector, its calls counted, the protocol session id attached.
    let sessions = admin(&m.host, &["sessions", "--json"]);
    let s = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["owner"]["instance"] == "s1" && s["connector"] == "mcp-test")
        .unwrap_or_else(|| panic!("no session: {sessions}"))
        .clone();
    assert_eq!(s["owner"]["agent"], "sdk-agent");
    assert!(
        s["calls"].as_u64().unwrap() >= 3,
        "initialize, tools/list, 2 calls: {s}"
    );
    assert_eq!(
        s["protocol_session_ids"].as_array().unwrap().len(),
        1,
        "{s}"
    );
    assert_eq!(
        s["protocol_session_ids"][0].as_str(),
        h["mcp-session-id"].as_str(),
        "{s}"
    );
    assert_eq!(s["idle_limit_ms"], 300_000);
    let connectors = admin(&m.host, &["connectors", "--json"]);
    let c = &connectors["connectors"][0];
    assert_eq!(c["id"], "mcp-test");
    assert_eq!(c["status"]["reachable"], true, "{c}");
    assert!(c["status"]["last_latency_us"].as_u64().unwrap() > 0);
    // The human table says the same.
    let table = m.host.enforcer(&["sessions"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("sdk-agent"));
}

fn admin(host: &TestHost, args: &[&str]) -> Value {
    let out = host.enforcer(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn stateless_era_round_trips_with_mcp_headers_preserved() {
    let m = setup("mcp-stateless", "");
    let out = m.client(
        "s1",
        "https://mcp.test:8443/mcp",
        &[
            "--mode",
            "2026-07-28",
            "--token",
            AGENT_TOKEN,
            "--calls",
            "echo:hi",
            "whoami:tagged",
        ],
    );
    assert_eq!(
        find(&out, "connected")["connected"]["era"],
        "stateless",
        "{out:?}"
    );
    assert_eq!(call(&out, "echo")["result"], "hi");
    let who: Value =
        serde_json::from_str(call(&out, "whoami")["result"].as_str().unwrap()).unwrap();
    let h = &who["headers"];
    assert_eq!(h["mcp-method"], "tools/call", "{h}");
    assert_eq!(h["mcp-name"], "whoami", "{h}");
    assert_eq!(h["mcp-param-tag"], "tagged", "Mcp-Param-* forwarded: {h}");
    assert_eq!(h["host"], "mcp.test:8443");
    assert_eq!(
        who["digests"]["authorization"],
        sha256_hex(&format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert!(h.get("mcp-session-id").is_none_or(Value::is_null), "{h}");
    let fwd = m.forwarded_lines();
    assert!(
        fwd.iter().any(|l| l["fields"]["era"] == "Some(Stateless)"),
        "{fwd:?}"
    );
}

#[test]
fn progress_notifications_stream_through_as_they_happen() {
    let m = setup("mcp-stream", "");
    let out = m.client(
        "s1",
        "https://mcp.test:8443/mcp",
        &["--mode", "legacy", "--calls", "slow_count:5:300"],
    );
    let times: Vec<u64> = out
        .iter()
        .filter(|v| v.get("progress").is_some())
        .map(|v| v["t_ms"].as_f64().unwrap() as u64)
        .collect();
    assert_eq!(times.len(), 5, "{out:?}");
    assert_eq!(call(&out, "slow_count")["result"], "done");
    // Each notification arrives on its own, about 300 ms after the previous one: not a burst
    // released at the end.
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 150, "notifications bunched together: {times:?}");
    }
    assert!(
        times[0] < 1000,
        "the first notification was held back: {times:?}"
    );
}

#[test]
fn unknown_destinations_are_refused_with_a_clear_reason() {
    let m = setup("mcp-unknown", "");
    let accepted = m.host.upstream_accepted();
    // The netprobe upstream on 7000 is not an MCP server any connector names.
    let url = format!("https://{}:7000/mcp", m.host.up_v4);
    let out = m.client("u1", &url, &["--mode", "legacy"]);
    let err = find(&out, "error");
    let text = err.to_string();
    assert!(text.contains("no connector matches"), "{err}");
    assert_eq!(
        m.host.upstream_accepted(),
        accepted,
        "nothing reached the upstream"
    );
    // The refusal is a connection-level receipt naming the destination.
    let mut receipts = Vec::new();
    enforcer_tests::wait_for(Duration::from_secs(5), || {
        receipts = m
            .host
            .cli_json(&["audit", "search", "--json", "--outcome", "refused"])["receipts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        !receipts.is_empty()
    })
    .expect("a receipt for the refused flow");
    let r = &receipts[0];
    assert_eq!(r["kind"], "connection");
    assert_eq!(r["event"]["event"], "unknown_destination");
    assert_eq!(r["event"]["destination"], format!("{}:7000", m.host.up_v4));
    assert_eq!(r["actor"]["agent"], "sdk-agent");
    let refusals = m
        .host
        .daemon_log_lines()
        .into_iter()
        .filter(|l| l["fields"]["event"] == "unknown_destination")
        .count();
    assert!(refusals >= 1);
}

#[test]
fn bad_bodies_are_refused_while_another_session_keeps_working() {
    let m = setup("mcp-badbody", "");
    // A long streaming call in one agent...
    let mut busy = m
        .client_cmd(
            "busy",
            "https://mcp.test:8443/mcp",
            &["--mode", "legacy", "--calls", "slow_count:6:250"],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut busy_out = lines(&mut busy);
    assert!(
        read_until(&mut busy_out, |v| v.get("progress").is_some()).is_some(),
        "busy call started"
    );

    // ...while another agent sends malformed and oversized bodies.
    let url = "https://mcp.test:8443/mcp";
    let bad = m.host.dir.join("bad.json");
    std::fs::write(&bad, "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ").unwrap();
    let (status, body) = m.curl("c1", url, &bad);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], -32700, "{body}");

    let invalid = m.host.dir.join("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"jsonrpc":"1.0","id":9,"method":"tools/list"}"#,
    )
    .unwrap();
    let (status, body) = m.curl("c2", url, &invalid);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        (body["error"]["code"].clone(), body["id"].clone()),
        (json!(-32600), json!(9)),
        "{body}"
    );

    let big = m.host.dir.join("big.json");
    let padding = "x".repeat(70_000);
    std::fs::write(
        &big,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "echo", "arguments": {"text": padding}}})
        .to_string(),
    )
    .unwrap();
    let (status, body) = m.curl("c3", url, &big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"]["data"]["reason_code"], "body_too_large",
        "{body}"
    );

    // The streaming call was untouched.
    let rest: Vec<Value> = std::iter::from_fn(|| read_until(&mut busy_out, |_| true)).collect();
    let _ = busy.wait();
    assert_eq!(
        rest.iter().filter(|v| v.get("progress").is_some()).count(),
        5,
        "{rest:?}"
    );
    assert!(
        rest.iter()
            .any(|v| v["call"] == "slow_count" && v["result"] == "done"),
        "{rest:?}"
    );
}

#[test]
fn an_upstream_certificate_the_connector_does_not_trust_is_refused() {
    let m = setup("mcp-rogue", "");
    let out = m.client("r1", "https://mcp.test:8444/mcp", &["--mode", "legacy"]);
    let err = find(&out, "error").to_string();
    assert!(err.contains("upstream_unavailable"), "{err}");
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "the reason names the certificate problem: {err}"
    );
    let warn = m
        .host
        .daemon_log_lines()
        .into_iter()
        .find(|l| l["fields"]["message"] == "upstream request failed")
        .expect("logged");
    assert!(
        warn["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{warn}"
    );
    // Route status records the failure for the operator.
    let connectors = admin(&m.host, &["connectors", "--json"]);
    let rogue = connectors["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "rogue")
        .unwrap()
        .clone();
    assert_eq!(rogue["status"]["reachable"], false, "{rogue}");
    assert!(
        rogue["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{rogue}"
    );
}

#[test]
fn plain_http_mcp_is_inspected_and_idle_sessions_close_on_both_legs() {
    let m = setup("mcp-plain", "");
    let url = format!("http://{}:8080/mcp", m.host.up_v4);
    let out = m.client("p1", &url, &["--mode", "legacy", "--calls", "echo:plain"]);
    assert_eq!(call(&out, "echo")["result"], "plain", "{out:?}");
    assert!(m
        .forwarded_lines()
        .iter()
        .any(|l| l["fields"]["tool"] == "echo"));
    // This server answers in a JSON body: the receipt, written before that body is released,
    // still counts the body's bytes.
    let receipts = m.search(&["--tool", "echo"]);
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let outcome = &receipts[0]["outcome"];
    assert_eq!(outcome["status"], "ok", "{outcome}");
    assert!(
        outcome["bytes_out"].as_u64().unwrap() > 50,
        "bytes released: {outcome}"
    );

    // A keep-alive client flow left idle past the connector's 1 s limit is closed by the
    // enforcer, and the session's upstream connections go with it.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let addr = format!("{}:8080", m.host.up_v4);
    let probe = bin("netprobe");
    let out = m
        .host
        .exec_cmd(
            "idler",
            "i1",
            &[
                probe.to_str().unwrap(),
                "http-idle",
                &addr,
                &addr,
                body,
                "5000",
            ],
        )
        .output()
        .unwrap();
    let out = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(out[0]["status"].is_string(), "{out:?}");
    let closed = out[1]["closed_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("not closed: {out:?}"));
    assert!((500..4000).contains(&closed), "closed after {closed} ms");
    let drained = wait_for(Duration::from_secs(5), || {
        m.host.status()["map_entries"]["PROXY_LEGS"] == 0
    });
    assert!(drained.is_some(), "upstream legs left: {}", m.host.status());
    assert!(m
        .host
        .daemon_log_lines()
        .iter()
        .any(|l| l["fields"]["message"] == "idle session closed on both legs"));
}

#[test]
fn mutual_tls_upstreams_get_the_connectors_client_certificate() {
    let m = setup("mcp-mtls", "");
    let out = m.client(
        "t1",
        "https://mcp.test:8445/mcp",
        &["--mode", "legacy", "--calls", "echo:mtls"],
    );
    assert_eq!(call(&out, "echo")["result"], "mtls", "{out:?}");
    let fwd = m.forwarded_lines();
    let line = fwd
        .iter()
        .find(|l| l["fields"]["tool"] == "echo" && l["fields"]["connector"] == "mtls")
        .unwrap_or_else(|| panic!("{fwd:?}"));
    assert_eq!(line["fields"]["credential_mode"], "Mtls");

    // The same server through a connector without a client certificate: the server refuses
    // the handshake and the agent gets a JSON-RPC error naming the failure.
    let url = format!("https://{}:8445/mcp", m.host.up_v4);
    let out = m.client("t2", &url, &["--mode", "legacy"]);
    let err = find(&out, "error").to_string();
    assert!(err.contains("upstream_unavailable"), "{err}");
    assert!(
        err.contains("mtls-without-cert"),
        "names the connector: {err}"
    );
}

#[test]
fn session_streams_resumption_and_delete_pass_through() {
    let m = setup("mcp-streams", "");
    // A session-era conversation by hand with curl as the agent (no token: the enforcer
    // injects the one the server demands): initialize, a streaming call, resume its stream
    // with Last-Event-ID, open the GET stream, DELETE the session, then use the deleted id.
    let d = m.host.dir.join("curl");
    std::fs::create_dir_all(&d).unwrap();
    let script = format!(
        r#"set -e
D={d}
C="curl -sS --resolve mcp.test:8443:{up} -H Content-Type:application/json -H Accept:application/json,text/event-stream"
U=https://mcp.test:8443/mcp
$C -D $D/init.h -o $D/init.b -d '{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"curl","version":"1"}}}}}}' $U
SID=$(grep -i '^mcp-session-id:' $D/init.h | tr -d '\r' | cut -d' ' -f2)
H="-H Mcp-Session-Id:$SID -H MCP-Protocol-Version:2025-11-25"
$C $H -o /dev/null -w '%{{http_code}}' -d '{{"jsonrpc":"2.0","method":"notifications/initialized"}}' $U > $D/notified
$C $H -o $D/call.b -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"slow_count","arguments":{{"n":3,"delay_ms":50}},"_meta":{{"progressToken":"p1"}}}}}}' $U
FIRST=$(grep '^id:' $D/call.b | tr -d '\r' | sed -n 2p | cut -d' ' -f2)
echo "$FIRST" > $D/first
$C $H -H "Last-Event-ID: $FIRST" -D $D/resume.h -o $D/resume.b --max-time 2 $U || true
$C $H -D $D/get.h -o $D/get.b --max-time 2 $U || true
$C $H -X DELETE -o /dev/null -w '%{{http_code}}' $U > $D/delete
$C $H -o $D/after.b -w '%{{http_code}}' -d '{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}' $U > $D/after
echo "$SID" > $D/sid
"#,
        d = d.display(),
        up = m.host.up_v4
    );
    let out = m
        .host
        .exec_cmd("curl-agent", "s1", &["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
    let sid = read("sid").trim().to_string();
    assert!(
        !sid.is_empty(),
        "initialize answered with a session id: {}",
        read("init.h")
    );
    assert!(
        read("init.b").contains("\"serverInfo\""),
        "{}",
        read("init.b")
    );
    assert_eq!(read("notified").trim(), "202");
    // Resumption: after the first progress event, the stream replays the rest.
    let first: u64 = read("first")
        .trim()
        .parse()
        .expect("event ids on the SSE stream");
    let resumed = read("resume.b");
    assert!(read("resume.h").contains(" 200"), "{}", read("resume.h"));
    assert!(
        resumed.contains(&format!("id: {}", first + 1)),
        "replayed from {first}: {resumed}"
    );
    assert!(
        resumed.contains("\"progress\":2") && resumed.contains("\"progress\":3"),
        "{resumed}"
    );
    assert!(
        !resumed.contains("\"progress\":1,"),
        "nothing before the resume point: {resumed}"
    );
    let get = read("get.h");
    assert!(
        get.starts_with("HTTP/2 200") || get.starts_with("HTTP/1.1 200"),
        "GET stream opened: {get}"
    );
    assert!(get.to_ascii_lowercase().contains("mcp-session-id"), "{get}");
    assert!(
        get.to_ascii_lowercase().contains("text/event-stream"),
        "{get}"
    );
    assert_eq!(read("delete").trim(), "200", "DELETE passed through");
    assert_eq!(
        read("after").trim(),
        "404",
        "a deleted session is gone: {}",
        read("after.b")
    );

    // The enforcer saw each method, and kept the protocol session id on its session.
    let methods: Vec<String> = m
        .forwarded_lines()
        .iter()
        .filter(|l| l["span"]["agent"] == "curl-agent")
        .map(|l| {
            l["fields"]["method"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for method in ["POST", "GET", "DELETE"] {
        assert!(
            methods.iter().any(|x| x == method),
            "{method} in {methods:?}"
        );
    }
    let sessions = admin(&m.host, &["sessions", "--json"]);
    let ids = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["owner"]["agent"] == "curl-agent")
        .map(|s| s["protocol_session_ids"].clone())
        .unwrap();
    assert_eq!(ids, json!([sid]));
}

#[test]
fn header_mode_credentials_and_the_routes_source_address() {
    let m = setup("mcp-route", "");
    let url = format!("http://{}:8080/mcp", m.host.up_v4);
    let out = m.client(
        "h1",
        &url,
        &[
            "--mode",
            "legacy",
            "--token",
            AGENT_TOKEN,
            "--calls",
            "whoami",
        ],
    );
    let who: Value =
        serde_json::from_str(call(&out, "whoami")["result"].as_str().unwrap()).unwrap();
    let h = &who["headers"];
    assert_eq!(
        who["digests"]["x-api-key"],
        sha256_hex(API_KEY),
        "API-key header injected: {who}"
    );
    assert_eq!(h["x-api-key"], "[REDACTED:bound_secret]", "{h}");
    assert!(
        h.get("authorization").is_none_or(Value::is_null),
        "agent's token dropped, not forwarded: {h}"
    );
    assert_eq!(
        who["peer"],
        m.host.host_address(ROUTE_SOURCE_HOST).to_string(),
        "the upstream connection left from the route's source address"
    );
    let fwd = m.forwarded_lines();
    let line = fwd
        .iter()
        .find(|l| l["fields"]["tool"] == "whoami")
        .unwrap();
    assert_eq!(line["fields"]["binding"], "plain-api-key@v1");
    assert_eq!(line["fields"]["route"], "lab");
    let log = std::fs::read_to_string(m.host.dir.join("daemon.log")).unwrap();
    assert!(!log.contains(API_KEY) && !log.contains(AGENT_TOKEN));
}

#[test]
fn batches_are_inspected_element_by_element() {
    let m = setup("mcp-batch", "");
    let url = format!("http://{}:8080/mcp", m.host.up_v4);
    let post = |instance: &str, body: &str| -> (String, Value) {
        let out = m
            .host
            .exec_cmd(
                "batcher",
                instance,
                &[
                    "curl",
                    "-sS",
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    "Accept: application/json, text/event-stream",
                    "-d",
                    body,
                    "-w",
                    "\n%{http_code}",
                    &url,
                ],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(json!(body)),
        )
    };
    // A well-formed batch is inspected (two messages) and forwarded; this server era refuses
    // batches itself, and its answer comes back unchanged.
    let (code, _) = post(
        "b1",
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
    );
    let fwd = m.forwarded_lines();
    let line = fwd
        .iter()
        .find(|l| l["span"]["agent"] == "batcher")
        .unwrap_or_else(|| panic!("batch forwarded: {fwd:?}"));
    assert_eq!(line["fields"]["messages"], 2, "{line}");
    assert_eq!(line["fields"]["status"].to_string(), code);
    // One bad element refuses the whole batch before it leaves, with the element's id.
    let (code, body) = post(
        "b2",
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":7,"method":42}]"#,
    );
    assert_eq!(code, "400", "{body}");
    assert_eq!(
        (body["error"]["code"].clone(), body["id"].clone()),
        (json!(-32600), json!(7)),
        "{body}"
    );
    assert_eq!(
        m.forwarded_lines()
            .iter()
            .filter(|l| l["span"]["agent"] == "batcher")
            .count(),
        1,
        "the bad batch never reached the server"
    );
}
