//! `cargo xtask demo`: the enforcer's main job, shown end to end on this host.
//!
//! A private test host: the agents' network namespace, and an upstream namespace reachable
//! only over a veth link where a real MCP server (the official Python SDK) serves over TLS and
//! demands a token only the enforcer holds. The real daemon attaches its kernel programs; an
//! agent (the SDK's client) started with `enforcer exec` calls tools through the kernel
//! redirect, the TLS-terminating proxy and the credential injection; policy denies a risky
//! tool and masking redacts a leaked key; then the admin runs the incident drill from the
//! denial's receipt, which revokes the agent run, kills its streaming call mid-flight, checks
//! its flows are dead, and the admin log shows what was done.

use std::process::Stdio;

use anyhow::{bail, Context as _};
use enforcer_tests::{
    lines,
    mcp::{self, AGENT_TOKEN, UPSTREAM_TOKEN},
    read_until, sha256_hex,
};
use serde_json::Value;

const URL: &str = "https://mcp.test:8443/mcp";

fn say(step: &str) {
    println!("\n\x1b[1m== {step}\x1b[0m");
}

fn show(out: &std::process::Output) {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

pub fn run() -> anyhow::Result<()> {
    crate::require_root("the demo")?;
    crate::setup::run_all()?;
    crate::cargo(&["build", "--bins"])?;

    say("1. A host with an MCP server upstream, reachable only over a veth link");
    let m = mcp::setup_with_drill_policy("demo", "", "");
    println!(
        "MCP server (official Python SDK) at {URL} -> {} in namespace {}; it accepts only the \
         token the enforcer holds",
        m.host.up_v4, m.host.ns_up
    );

    say("2. The daemon attached its kernel programs and knows the connector");
    show(&m.host.enforcer(&["status"]));
    show(&m.host.enforcer(&["connectors"]));

    say("3. An agent calls tools: kernel redirect -> TLS terminated -> credential injected");
    println!("$ enforcer exec --agent code-review --instance run-1 -- mcp_client.py {URL} --token <agent's own token> --calls echo:hello whoami");
    let out = m.client_as(
        "code-review",
        "run-1",
        URL,
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
    for line in &out {
        if line.get("tools").is_some() || line["call"] == "echo" {
            println!("agent: {line}");
        }
    }
    let who = out
        .iter()
        .find(|l| l["call"] == "whoami")
        .and_then(|l| l["result"].as_str())
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .context("whoami failed: is the agent trusting the enforcer's CA?")?;
    let auth = who["digests"]["authorization"].as_str().unwrap_or_default();
    println!(
        "the server saw Host {} and {} (the tool echoed it back: the agent got {})",
        who["headers"]["host"],
        if auth == sha256_hex(&format!("Bearer {UPSTREAM_TOKEN}")) {
            "the enforcer's bound credential instead of the agent's token"
        } else {
            "an unexpected Authorization"
        },
        who["headers"]["authorization"]
    );
    show(&m.host.enforcer(&["sessions"]));
    if let Some(l) = m
        .forwarded_lines()
        .iter()
        .find(|l| l["fields"]["tool"] == "whoami")
    {
        println!(
            "daemon's record: agent={} instance={} user={} exe={} tool=whoami credential={} binding={}",
            l["span"]["agent"], l["span"]["instance"], l["span"]["user"], l["span"]["exe"],
            l["fields"]["credential_mode"], l["fields"]["binding"]
        );
    }

    say(
        "3b. Policy and masking: a risky tool is denied with diagnostics; a leaked key is redacted",
    );
    println!("$ enforcer policy history");
    show(&m.host.enforcer(&["policy", "history"]));
    let out = m.client_as(
        "code-review",
        "run-1b",
        URL,
        &[
            "--mode",
            "legacy",
            "--calls",
            r#"delete_everything:{"confirm":true}"#,
            "leak_secret",
        ],
    );
    for line in &out {
        if line.get("call").is_some() {
            println!("agent: {line}");
        }
    }
    if let Some(receipt) = out
        .iter()
        .find(|l| l["call"] == "delete_everything")
        .and_then(|l| l["data"]["receipt"].as_str())
    {
        println!("$ enforcer audit show {receipt}");
        show(&m.host.enforcer(&["audit", "show", receipt]));
    }
    println!("$ enforcer audit search --agent code-review");
    show(
        &m.host
            .enforcer(&["audit", "search", "--agent", "code-review"]),
    );

    say("4. An agent run makes a risky call (denied), then a long streaming call is in flight");
    let mut agent = m
        .client_cmd_as(
            "code-review",
            "run-2",
            URL,
            &[
                "--mode",
                "legacy",
                "--calls",
                r#"delete_everything:{"confirm":true}"#,
                "slow_count:120:250",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = lines(&mut agent);
    let denied = read_until(&mut out, |v| v["call"] == "delete_everything").context("no denial")?;
    println!("agent: {denied}");
    for _ in 0..3 {
        let p = read_until(&mut out, |v| v.get("progress").is_some()).context("no progress")?;
        println!("agent: {p}");
    }
    let receipt = denied["data"]["receipt"]
        .as_str()
        .context("the denial names its receipt")?
        .to_string();

    say("5. The incident drill, from the receipt the agent's developer reported");
    println!("$ enforcer drill {receipt} --yes");
    let drill = m.host.enforcer(&["drill", &receipt, "--yes"]);
    show(&drill);
    if !drill.status.success() {
        bail!("the drill failed");
    }
    let end = read_until(&mut out, |v| {
        v.get("error").is_some() || v.get("call").is_some()
    });
    println!(
        "agent: {}",
        end.map(|v| v.to_string())
            .unwrap_or_else(|| "(its stream was cut)".into())
    );
    let _ = agent.wait();

    say("6. The whole agent is revoked: new instances are refused in the kernel");
    println!("$ enforcer revoke --agent code-review --reason \"demo: the whole agent\" --yes");
    show(&m.host.enforcer(&[
        "revoke",
        "--agent",
        "code-review",
        "--reason",
        "demo: the whole agent",
        "--yes",
    ]));
    let again = m.client_as(
        "code-review",
        "run-3",
        URL,
        &["--mode", "legacy", "--calls", "echo:again"],
    );
    println!(
        "agent (new instance after the agent-level revocation): {}",
        again
            .first()
            .cloned()
            .unwrap_or_else(|| "(refused by enforcer exec)".into())
    );
    let by_hand = m.host.in_cgroup(
        "code-review/by-hand",
        &["connect", &format!("{}:8443", m.host.up_v4)],
    );
    println!(
        "a process placed in the agent's cgroup by hand: {}",
        by_hand.first().cloned().unwrap_or_default()
    );
    println!("$ enforcer admin-log");
    show(&m.host.enforcer(&["admin-log"]));
    show(&m.host.enforcer(&["status"]));

    say("7. Clean up (the test host's namespaces, cgroups and pins are removed)");
    drop(m);

    say("8. The drill rehearsed with nothing but the binary: enforcer drill --simulate");
    println!("$ enforcer drill --simulate");
    let rehearsal = std::process::Command::new(enforcer_tests::bin("enforcer"))
        .args(["drill", "--simulate"])
        .status()
        .context("running enforcer drill --simulate")?;
    if !rehearsal.success() {
        bail!("the rehearsal failed");
    }
    println!("done");
    Ok(())
}
