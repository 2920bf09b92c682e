//! systemd deployment: the shipped units verify; the daemon tells its service manager READY,
//! RELOADING and STOPPING in order (a test notify socket); a reload applies a new policy
//! under a live streaming session and refuses a bad one, which leaves the old in force.

use std::{os::unix::net::UnixDatagram, path::Path, process::Stdio, time::Duration};

use enforcer_tests::{
    lines,
    mcp::{policy_file, setup_with_policy},
    read_until,
};
const URL: &str = "https://mcp.test:8443/mcp";

#[test]
fn the_shipped_units_verify() {
    let dir = std::env::temp_dir().join(format!("enforcer-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../enforcer/dist/systemd");
    let bin = enforcer_tests::bin("enforcer");
    let mut args = vec!["verify".to_string(), "--man=no".to_string()];
    for unit in [
        "enforcer.service",
        "enforcer.socket",
        "enforcer-agents.slice",
        "enforcer-agent@.service",
    ] {
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text = std::fs::read_to_string(source.join(unit))
            .unwrap()
            .replace("/usr/local/bin/enforcer", &bin.display().to_string());
        std::fs::write(dir.join(unit), text).unwrap();
        if !unit.ends_with("@.service") {
            args.push(dir.join(unit).display().to_string());
        }
    }
    // A template verifies as one of its instances.
    std::fs::copy(
        dir.join("enforcer-agent@.service"),
        dir.join("enforcer-agent@demo.service"),
    )
    .unwrap();
    args.push(
        dir.join("enforcer-agent@demo.service")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(&args)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze (installed by cargo xtask setup)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Notifications received, each datagram as its lines.
fn next_notification(sock: &UnixDatagram) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(String::from)
        .collect()
}

fn wait_notification(sock: &UnixDatagram, key: &str) -> Vec<String> {
    for _ in 0..20 {
        let n = next_notification(sock);
        if n.iter().any(|l| l.starts_with(key)) {
            return n;
        }
    }
    panic!("no {key} notification");
}

#[test]
fn notifies_its_service_manager_and_reloads_policy_under_a_live_session() {
    let dir = std::env::temp_dir().join(format!("enforcer-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.cedar");
    let original = std::fs::read_to_string(policy_file("drill.cedar")).unwrap();
    std::fs::write(&policy, &original).unwrap();
    let mut m = setup_with_policy("systemd-reload", &policy, "", "");

    // Restart under a test notify socket, as systemd would run it.
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    m.host.stop_daemon();
    m.host
        .daemon_env
        .push(("NOTIFY_SOCKET".into(), notify.display().to_string()));
    m.host.start_daemon();
    let ready = wait_notification(&sock, "READY=1");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=enforcing; policy v1")),
        "{ready:?}"
    );
    let h = &m.host;

    // A live streaming session.
    let mut agent = m
        .client_cmd(
            "live",
            URL,
            &["--mode", "legacy", "--calls", "slow_count:80:250"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = lines(&mut agent);
    read_until(&mut out, |v| v.get("progress").is_some()).expect("streaming");

    // A new policy retires echo: reloaded without dropping the stream.
    std::fs::write(
        &policy,
        format!(
            "{original}\n@id(\"echo-retired\")\n@reason(\"echo_retired\")\nforbid(principal, action == Action::\"tools/call\", resource == Tool::\"echo\");\n"
        ),
    )
    .unwrap();
    let hup = |pid: u32| {
        // SAFETY: kill(2) on the daemon's pid.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    };
    hup(h.daemon_pid());
    let reloading = wait_notification(&sock, "RELOADING=1");
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = wait_notification(&sock, "READY=1");
    assert!(ready.iter().any(|l| l.contains("policy v2")), "{ready:?}");
    let denied = m.client(
        "after",
        URL,
        &["--mode", "legacy", "--calls", r#"echo:{"text":"x"}"#],
    );
    let d = denied
        .iter()
        .find(|l| l["call"] == "echo")
        .unwrap_or_else(|| panic!("{denied:?}"));
    assert_eq!(d["data"]["reason_code"], "echo_retired", "{d}");
    assert_eq!(d["data"]["policy_version"], "v2", "{d}");
    assert!(
        read_until(&mut out, |v| v.get("progress").is_some()).is_some(),
        "the live stream went on through the reload"
    );

    // A policy that does not compile is refused; v2 stays in force, and the log says why.
    std::fs::write(
        &policy,
        "permit(principal, action, resource)\nwhen { oops ;\n",
    )
    .unwrap();
    hup(h.daemon_pid());
    wait_notification(&sock, "RELOADING=1");
    let ready = wait_notification(&sock, "READY=1");
    assert!(
        ready.iter().any(|l| l.contains("last reload refused")),
        "{ready:?}"
    );
    let still = m.client(
        "still",
        URL,
        &["--mode", "legacy", "--calls", r#"echo:{"text":"x"}"#],
    );
    let d = still.iter().find(|l| l["call"] == "echo").unwrap();
    assert_eq!(d["data"]["policy_version"], "v2", "{d}");
    assert!(h.daemon_log_lines().iter().any(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("reload refused"))
            && l["fields"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("does not compile"))
    }));
    assert!(
        read_until(&mut out, |v| v.get("progress").is_some()).is_some(),
        "the live stream went on through the refused reload"
    );
    let log = h.cli_json(&["admin-log", "--json", "--action", "reload"]);
    let results: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, vec!["refused", "ok"], "{log}");

    // Stopping says so.
    let _ = agent.kill();
    let _ = agent.wait();
    m.host.stop_daemon();
    let stopping = wait_notification(&sock, "STOPPING=1");
    assert!(!stopping.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The capability set `enforcer.service` names, as setpriv's `+cap` list.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../enforcer/dist/systemd/enforcer.service"),
    )
    .unwrap();
    unit.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit names its capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

#[test]
fn the_daemon_works_with_only_the_capabilities_its_unit_grants() {
    let caps = unit_capabilities();
    let mut m = enforcer_tests::mcp::setup("systemd-caps", "");
    m.host.stop_daemon();
    // From scratch: the limited daemon loads, attaches and pins the programs itself.
    let cleanup = m.host.enforcer(&["daemon", "--cleanup"]);
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    m.host.daemon_wrapper = vec![
        "setpriv".into(),
        "--bounding-set".into(),
        bounding,
        "--no-new-privs".into(),
    ];
    m.host.start_daemon();
    let h = &m.host;
    // The kernel agrees: the daemon's effective set is exactly the unit's.
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.daemon_pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        eff.count_ones() as usize,
        caps.len(),
        "CapEff {eff:x} for {caps:?}"
    );

    // It enforces: calls through the proxy, and a revocation that cuts a live stream and
    // destroys the agent's sockets in the kernel.
    let out = m.client("c1", URL, &["--mode", "legacy", "--calls", "echo:caps"]);
    assert!(out.iter().any(|l| l["result"] == "caps"), "{out:?}");
    let mut agent = m
        .client_cmd(
            "c2",
            URL,
            &["--mode", "legacy", "--calls", "slow_count:60:250"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines_out = lines(&mut agent);
    read_until(&mut lines_out, |v| v.get("progress").is_some()).expect("streaming");
    let rev = h.cli_json(&[
        "revoke",
        "--instance",
        "sdk-agent/c2",
        "--reason",
        "capability test",
        "--yes",
        "--json",
    ]);
    assert_eq!(rev["kill"]["failed"], 0, "{rev}");
    let end = read_until(&mut lines_out, |v| {
        v.get("call").is_some() || v.get("error").is_some()
    })
    .expect("the call ended");
    assert_eq!(end["data"]["reason_code"], "revoked", "{end}");
    let _ = agent.wait();
    // A new process of the revoked instance is refused in the kernel, and the kernel's own
    // log line reaches the daemon's log (aya-log).
    let refused = h.in_cgroup("sdk-agent/c2", &["connect", &format!("{}:8443", h.up_v4)]);
    assert!(
        refused.iter().any(|l| l["errno"].as_i64().is_some()),
        "{refused:?}"
    );
    let kernel_said = enforcer_tests::wait_for(Duration::from_secs(5), || {
        h.daemon_log_lines().iter().any(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("revoked cgroup"))
        })
    });
    assert!(kernel_said.is_some(), "aya-log lines reach the daemon");
    let after = h.cli_json(&["impact", "--instance", "sdk-agent/c2", "--json"]);
    assert_eq!(after["flows"]["agent_sockets"], 0, "{after}");
    assert_eq!(after["flows"]["proxy_legs"], 0, "{after}");
    // And the metrics endpoint, the admin socket and the audit store all worked.
    let r = h.cli_json(&["audit", "search", "--json", "--tool", "echo"]);
    assert!(!r["receipts"].as_array().unwrap().is_empty());
}
