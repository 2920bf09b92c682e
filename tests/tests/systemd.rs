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
