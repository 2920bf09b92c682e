//! `cargo xtask demo`: the enforcer's main job, shown end to end on this host.
//!
//! A private test host (two network namespaces: the agents' host and an upstream reachable
//! only over a veth link), the real daemon, an agent started with `enforcer exec` whose
//! connection is visibly redirected with its kernel identity, a revocation, and the kill:
//! the blocked agent's read fails at once and its reconnect is refused.

use std::time::Duration;

use anyhow::{bail, Context as _};
use enforcer_tests::{lines, read_until, wait_for, TestHost};
use serde_json::Value;

fn say(step: &str) {
    println!("\n\x1b[1m== {step}\x1b[0m");
}

fn show(out: &std::process::Output) {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

pub fn run() -> anyhow::Result<()> {
    crate::require_root("the demo")?;
    crate::ensure_bpffs()?;
    crate::cargo(&["build", "--bins"])?;

    say("1. A test host: agents' namespace + an upstream only reachable over a veth link");
    // The upstream here is a plain TCP service, not an MCP server: tunnel it (the default
    // refuses destinations no connector describes).
    let mut host = TestHost::with_config("demo", "[proxy]\nunknown_destinations = \"tunnel\"\n");
    let upstream = host.upstream_v4(7000).to_string();
    println!("upstream service: {upstream} (namespace {})", host.ns_up);

    say("2. Start the daemon: attach the kernel programs to the agents' cgroup root, pin them");
    host.start_daemon();
    show(&host.enforcer(&["status"]));

    say("3. Start an agent with `enforcer exec` and let it connect to the upstream");
    println!("$ enforcer exec --agent code-review --instance run-1 -- netprobe connect {upstream} --hold --reconnect");
    let mut agent = host.spawn_agent(
        "code-review",
        "run-1",
        &["connect", &upstream, "--hold", "--reconnect"],
    );
    let mut out = lines(&mut agent);
    let first = read_until(&mut out, |v| v.get("ok").is_some()).context("agent said nothing")?;
    println!("agent sees: {first}");
    if first["ok"] != true {
        bail!("the agent could not connect: {first}");
    }
    println!(
        "-> the agent's socket is connected to {} (the proxy), and the upstream answered: {}",
        first["peer"], first["greeting"]
    );
    let pid = first["pid"].as_u64().unwrap_or(0);
    let mut line: Option<Value> = None;
    wait_for(Duration::from_secs(5), || {
        line = host
            .daemon_log_lines()
            .into_iter()
            .find(|l| l["fields"]["event"] == "tunnel" && l["span"]["pid"] == pid);
        line.is_some()
    });
    if let Some(l) = line {
        println!(
            "daemon's record of the flow (identity from the kernel, not the client): {}",
            l["span"]
        );
    }

    say("4. Revoke the agent: persist, refuse in the kernel, destroy its live sockets");
    println!("$ enforcer revoke --agent code-review --reason \"demo: suspected exfiltration\"");
    let rev = host.enforcer(&[
        "revoke",
        "--agent",
        "code-review",
        "--reason",
        "demo: suspected exfiltration",
    ]);
    show(&rev);
    if !rev.status.success() {
        bail!("revoke failed");
    }

    say("5. The kill, as the agent saw it");
    let ended =
        read_until(&mut out, |v| v.get("read_ended").is_some()).context("read did not end")?;
    println!("blocked read ended: {ended}  (errno 103 = ECONNABORTED)");
    let again = read_until(&mut out, |v| v.get("reconnect").is_some()).context("no reconnect")?;
    println!("its reconnect: {again}  (errno 1 = EPERM)");
    let _ = agent.wait();

    say("6. A new instance of the revoked agent is refused too");
    let later = host.in_cgroup("code-review/run-2", &["connect", &upstream]);
    println!(
        "new instance (cgroup made by hand, bypassing exec): {}",
        later.first().cloned().unwrap_or_default()
    );
    show(&host.enforcer(&["status"]));

    say("7. Clean up (the test host, its namespaces, cgroups and pins are removed)");
    drop(host);
    println!("done");
    Ok(())
}
