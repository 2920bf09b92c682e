//! The kernel data path on a real kernel: redirect, identity, refusals, kill, fail-closed,
//! adoption after restart, and no leaked map entries. Each test owns a private test host
//! (network namespaces, cgroup subtree, pin directory); see `enforcer_tests::TestHost`.

use std::time::Duration;

use enforcer_tests::{
    lines, read_until, wait_for, TestHost, PROXY_ADDRS, TUNNEL_CONFIG, UPSTREAM_PORTS,
};
use serde_json::{json, Value};

const EPERM: i64 = 1;
const ECONNREFUSED: i64 = 111;
const ECONNRESET: i64 = 104;
const ECONNABORTED: i64 = 103;

fn tunnel_host(name: &str) -> TestHost {
    TestHost::with_config(name, TUNNEL_CONFIG)
}

#[test]
fn redirects_v4_and_v6_with_kernel_identity_for_two_agents_two_instances() {
    let mut host = tunnel_host("identity");
    host.start_daemon();
    let up4 = host.upstream_v4(7000).to_string();
    let up6 = host.upstream_v6(7001).to_string();
    for agent in ["alpha", "beta"] {
        for instance in ["one", "two"] {
            for dest in [&up4, &up6] {
                let out = host.agent(agent, instance, &["connect", dest]);
                let r = out
                    .first()
                    .unwrap_or_else(|| panic!("{agent}/{instance} -> {dest}: no output"));
                assert_eq!(r["ok"], true, "{agent}/{instance} -> {dest}: {r}");
                // The agent's socket was rewritten to the proxy...
                assert!(
                    PROXY_ADDRS.contains(&r["peer"].as_str().unwrap()),
                    "not redirected: {r}"
                );
                // ...and the proxy relayed it to the original destination.
                assert_eq!(r["greeting"]["upstream"], json!(dest), "{r}");
                let pid = r["pid"].as_u64().unwrap();
                let line = host.tunnel_line(pid);
                let span = &line["span"];
                assert_eq!(span["agent"], agent, "{line}");
                assert_eq!(span["instance"], instance, "{line}");
                assert_eq!(span["user"], "root", "{line}");
                assert_eq!(span["dest"], json!(dest), "{line}");
                assert!(
                    span["exe"].as_str().unwrap().ends_with("netprobe"),
                    "{line}"
                );
            }
        }
    }
    // IPv4-mapped IPv6 destinations are redirected too and reach the IPv4 upstream.
    let mapped = format!("[::ffff:{}]:7002", host.up_v4);
    let r = &host.agent("alpha", "mapped", &["connect", &mapped])[0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["greeting"]["upstream"],
        json!(host.upstream_v4(7002).to_string()),
        "{r}"
    );
    assert!(PROXY_ADDRS.contains(&r["peer"].as_str().unwrap()), "{r}");
}

#[test]
fn keeps_original_destinations_apart_for_many_concurrent_connections() {
    let mut host = tunnel_host("concurrent");
    host.start_daemon();
    // 200 concurrent connects spread over 40 destinations (20 ports x 2 families).
    let mut dests = Vec::new();
    for i in 0..200u16 {
        let port = UPSTREAM_PORTS.start + i % 20;
        let a = if i % 2 == 0 {
            host.upstream_v4(port)
        } else {
            host.upstream_v6(port)
        };
        dests.push(a.to_string());
    }
    let mut args = vec!["connect-many"];
    args.extend(dests.iter().map(String::as_str));
    let out = host.agent("many", "i1", &args);
    assert_eq!(
        out.first(),
        Some(&json!({ "right": 200, "wrong": 0, "failed": 0 }))
    );
}

#[test]
fn leaves_processes_outside_the_subtree_and_the_proxy_itself_alone() {
    let mut host = tunnel_host("outside");
    host.start_daemon();
    let dest = host.upstream_v4(7003).to_string();
    let r = &host.outside(&["connect", &dest])[0];
    assert_eq!(r["ok"], true, "{r}");
    // Straight to the upstream: the socket's peer is the upstream and the upstream saw our
    // own address, not the proxy's.
    assert_eq!(r["peer"], json!(dest), "{r}");
    assert_eq!(r["greeting"]["peer"], r["local"], "{r}");
    let redirected_before = host.counter("redirected");
    let r = &host.agent("a", "i", &["connect", &dest])[0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(host.counter("redirected"), redirected_before + 1);
    // The proxy's own upstream connection went out unredirected (else it would have looped
    // back into the proxy and never reached the upstream).
    assert_eq!(r["greeting"]["upstream"], json!(dest));
}

#[test]
fn refuses_udp_except_dns_to_resolvers_and_sockets_that_could_bypass() {
    let mut host = tunnel_host("udp");
    // Resolvers are set after the upstream exists: the up namespace plays the resolver.
    let resolver = host.up_v4;
    std::fs::write(
        &host.config,
        std::fs::read_to_string(&host.config).unwrap()
            + &format!("[network]\ndns_resolvers = [\"{resolver}\"]\n"),
    )
    .unwrap();
    host.start_daemon();
    host.allow_ping_sockets();
    let dns = format!("{resolver}:53");
    let quic = format!("{resolver}:443");
    let other_dns = format!("{}:53", host.host_v4);
    let r = &host.agent("u", "i", &["udp", &dns])[0];
    assert_eq!(r["ok"], true, "DNS to the resolver must pass: {r}");
    let r = &host.agent("u", "i", &["udp-connect", &dns])[0];
    assert_eq!(
        r["ok"], true,
        "connected DNS to the resolver must pass: {r}"
    );
    for (what, args) in [
        ("QUIC", vec!["udp", quic.as_str()]),
        ("QUIC connected", vec!["udp-connect", quic.as_str()]),
        ("DNS elsewhere", vec!["udp", other_dns.as_str()]),
        ("IPv6 UDP", vec!["udp", "[::1]:53"]),
    ] {
        let r = &host.agent("u", "i", &args)[0];
        assert_eq!(r["errno"], EPERM, "{what} must be refused: {r}");
    }
    // Outside the subtree UDP is untouched.
    assert_eq!(host.outside(&["udp", &quic])[0]["ok"], true);
    for kind in ["icmp", "icmp6", "raw", "mptcp"] {
        let r = &host.agent("u", "i", &["socket", kind])[0];
        assert_eq!(r["ok"], false, "{kind} socket must be refused: {r}");
    }
    // The ping socket is refused by the enforcer (the namespace allows it), visible in the
    // counters.
    assert_eq!(host.outside(&["socket", "icmp"])[0]["ok"], true);
    assert!(host.counter("socket_refused") >= 2);
}

#[test]
fn revoke_kills_a_blocked_reader_and_refuses_reconnects_and_later_instances() {
    let mut host = tunnel_host("revoke");
    host.start_daemon();
    let dest = host.upstream_v4(7004).to_string();
    let accepted_before = host.upstream_accepted();

    // An instance holds a relayed connection, blocked in read.
    let mut holder = host.spawn_agent(
        "victim",
        "held",
        &["connect", &dest, "--hold", "--reconnect"],
    );
    let mut out = lines(&mut holder);
    let first = read_until(&mut out, |v| v.get("ok").is_some()).expect("holder output");
    assert_eq!(first["ok"], true, "{first}");
    // A bystander instance of another agent keeps working throughout.
    let mut bystander = host.spawn_agent("bystander", "b1", &["connect", &dest, "--hold"]);
    let mut bout = lines(&mut bystander);
    assert_eq!(
        read_until(&mut bout, |v| v.get("ok").is_some()).unwrap()["ok"],
        true
    );

    let live = host.status()["map_entries"]["AGENT_SOCKETS"]
        .as_u64()
        .unwrap();
    assert!(live >= 2, "both live agent sockets are tracked: {live}");

    let rev = host.enforcer(&[
        "revoke",
        "--instance",
        "victim/held",
        "--reason",
        "test",
        "--yes",
        "--json",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    let report: Value = serde_json::from_slice(&rev.stdout).unwrap();
    // The agent's socket and both proxy legs are gone: each destroyed, or closed by the
    // reset of its peer destroyed a moment before (the two legs are killed in parallel).
    let k = &report["kill"];
    assert_eq!(k["agent_sockets_found"], 1, "{report}");
    assert_eq!(k["proxy_legs_found"], 2, "{report}");
    let n = |f: &str| k[f].as_u64().unwrap();
    assert_eq!(
        n("agent_sockets_destroyed") + n("proxy_legs_destroyed") + n("already_closed"),
        3,
        "agent socket, client and upstream legs: {report}"
    );
    assert!(n("agent_sockets_destroyed") + n("proxy_legs_destroyed") >= 1);
    assert_eq!(report["kill"]["failed"], 0, "{report}");

    let ended = read_until(&mut out, |v| v.get("read_ended").is_some()).expect("read ended");
    // Killed in the kernel: its own socket destroyed (ECONNABORTED) or its destroyed proxy
    // leg's reset first (ECONNRESET); never a clean end of stream.
    assert!(
        ended["errno"] == ECONNABORTED || ended["errno"] == ECONNRESET,
        "{ended}"
    );
    let again = read_until(&mut out, |v| v.get("reconnect").is_some()).expect("reconnect");
    assert_eq!(again["reconnect"]["errno"], EPERM, "{again}");
    // The kernel program said why, through aya-log into the daemon's tracing output.
    let kernel_said = wait_for(Duration::from_secs(5), || {
        host.daemon_log_lines()
            .iter()
            .any(|l| l["fields"]["message"] == "refused socket() in a revoked cgroup")
    });
    assert!(
        kernel_said.is_some(),
        "no kernel-side log line reached the daemon log"
    );
    let _ = holder.wait();

    // The bystander's flow is intact: it is still blocked in read.
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "bystander must survive"
    );
    // Only the two connects above reached the upstream (the refused reconnect did not).
    assert_eq!(host.upstream_accepted(), accepted_before + 2);

    // Agent-level revocation: an instance created afterwards, by hand (not via exec), is
    // refused by the kernel through its ancestor cgroup.
    let rev = host.enforcer(&[
        "revoke",
        "--agent",
        "bystander",
        "--reason",
        "test",
        "--yes",
    ]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );
    let ended = read_until(&mut bout, |v| v.get("read_ended").is_some()).expect("bystander killed");
    // Both legs die at once: the agent's own socket destroyed (ECONNABORTED), or the reset of
    // its destroyed proxy leg arriving first (ECONNRESET).
    assert!(
        ended["errno"] == ECONNABORTED || ended["errno"] == ECONNRESET,
        "{ended}"
    );
    let r = &host.in_cgroup("bystander/started-later", &["connect", &dest])[0];
    assert_eq!(r["errno"], EPERM, "new instance of a revoked agent: {r}");
    // exec refuses up front with a clear message and its own exit code.
    let out = host
        .agent_cmd("bystander", "b2", &["connect", &dest])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    let _ = bystander.wait();

    // Reinstating lifts it.
    let re = host.enforcer(&["reinstate", "--agent", "bystander", "--reason", "test over"]);
    assert!(
        re.status.success(),
        "{}",
        String::from_utf8_lossy(&re.stderr)
    );
    assert_eq!(
        host.agent("bystander", "b3", &["connect", &dest])[0]["ok"],
        true
    );
}

#[test]
fn fails_closed_without_the_daemon_and_adopts_state_on_restart() {
    let mut host = tunnel_host("restart");
    host.start_daemon();
    let dest = host.upstream_v4(7005).to_string();
    assert_eq!(host.agent("a", "i1", &["connect", &dest])[0]["ok"], true);
    let rev = host.enforcer(&["revoke", "--agent", "banned", "--reason", "test", "--yes"]);
    assert!(
        rev.status.success(),
        "{}",
        String::from_utf8_lossy(&rev.stderr)
    );

    host.kill_daemon();
    let accepted = host.upstream_accepted();
    let r = &host.agent("a", "i2", &["connect", &dest])[0];
    assert_eq!(
        r["errno"], ECONNREFUSED,
        "with no daemon, agents must fail closed: {r}"
    );
    let r6 = &host.agent("a", "i2", &["connect", &host.upstream_v6(7005).to_string()])[0];
    assert_eq!(r6["ok"], false, "{r6}");
    assert_eq!(
        host.upstream_accepted(),
        accepted,
        "nothing reached the upstream"
    );
    let status = host.status();
    assert_eq!(status["daemon_running"], false);

    host.start_daemon();
    let adopted = host
        .daemon_log_lines()
        .into_iter()
        .filter(|l| l["fields"]["message"] == "enforcement in force")
        .map(|l| l["fields"]["attachment"].clone())
        .collect::<Vec<_>>();
    assert_eq!(adopted, vec![json!("Attached"), json!("Adopted")]);
    assert_eq!(host.agent("a", "i3", &["connect", &dest])[0]["ok"], true);
    let r = &host.agent("banned", "i1", &["connect", &dest]);
    assert!(
        r.is_empty(),
        "exec refuses the revoked agent before running it"
    );
    let r = &host.in_cgroup("banned/by-hand", &["connect", &dest])[0];
    assert_eq!(r["errno"], EPERM, "revocation survives the restart: {r}");
}

#[test]
fn ten_thousand_connections_leave_no_map_entries_behind() {
    let mut host = tunnel_host("leaks");
    host.start_daemon();
    let dest = host.upstream_v4(7006).to_string();
    let out = host.agent("loop", "i1", &["connect-loop", &dest, "10000"]);
    assert_eq!(out.first(), Some(&json!({ "ok": 10000, "failed": 0 })));
    let mut entries = Value::Null;
    let drained = wait_for(Duration::from_secs(10), || {
        entries = host.status()["map_entries"].clone();
        ["CONNECTS", "FLOWS", "AGENT_SOCKETS", "PROXY_LEGS"]
            .iter()
            .all(|m| entries[m] == 0)
    });
    assert!(drained.is_some(), "entries left behind: {entries}");
    assert!(host.counter("flows_indexed") >= 10000);
}

#[test]
fn admin_cli_says_clearly_when_the_daemon_is_down_or_the_caller_is_not_an_admin() {
    let mut host = TestHost::new("admin-cli");
    let out = host.enforcer(&["sessions"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon is not running"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    host.start_daemon();
    assert!(host.enforcer(&["sessions", "--json"]).status.success());
    // An unprivileged user cannot even open the socket (mode 0660, root:enforcer-admin).
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", host.ns_host))
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(enforcer_tests::bin("enforcer"))
        .arg("--config")
        .arg(&host.config)
        .arg("sessions");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("enforcer-admin"));
}
