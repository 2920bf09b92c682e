//! `cargo xtask bench-connect`: what the connect hooks cost an agent.
//!
//! In one run, interleaved over several rounds, it times connect()+close() loops against a
//! local listener from three places: outside the agents' subtree (no hooks), inside it to an
//! allowlisted destination (every hook runs: revocation checks, allowlist lookup, identity
//! record, sock_ops tracking, close cleanup, but no redirect), and inside it to a destination
//! that is redirected to the proxy. It prints the medians and the ratios to outside.

use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};
use enforcer_tests::{bin, lines, read_until, TestHost};

const SINK: &str = "127.0.0.1:9999";
const REDIRECTED: &str = "127.0.0.1:9998";
const ROUNDS: usize = 5;

pub fn connect(count: u32) -> anyhow::Result<()> {
    crate::require_root("the benchmark")?;
    crate::ensure_bpffs()?;
    crate::cargo(&["build", "--release", "--bins"])?;
    let release = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .context("target directory")?
        .join("release");
    std::env::set_var("ENFORCER_BIN_DIR", release);
    let mut host = TestHost::with_config(
        "bench",
        &format!("[proxy]\nunknown_destinations = \"tunnel\"\n[network]\nallow = [\"{SINK}\"]\n"),
    );
    host.start_daemon();
    let mut sink = spawn_sink(&host)?;
    let n = count.to_string();
    let mut samples: [Vec<u64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        samples[0].push(ns(&host.outside(&["connect-bench", SINK, &n]))?);
        samples[1].push(ns(&host.agent(
            "bench",
            "hooks",
            &["connect-bench", SINK, &n],
        ))?);
        samples[2].push(ns(&host.agent(
            "bench",
            "redirect",
            &["connect-bench", REDIRECTED, &n],
        ))?);
    }
    let _ = sink.kill();
    let medians: Vec<u64> = samples
        .iter_mut()
        .map(|v| {
            v.sort_unstable();
            v[v.len() / 2]
        })
        .collect();
    println!("connect()+close(), {count} per round, median of {ROUNDS} interleaved rounds");
    println!("{:<46} {:>10} {:>8}", "where", "ns/connect", "ratio");
    let labels = [
        "outside the agents subtree (no hooks)",
        "agent -> allowlisted (all hooks, no redirect)",
        "agent -> redirected to the proxy",
    ];
    for (label, m) in labels.iter().zip(&medians) {
        println!("{label:<46} {m:>10} {:>8.2}", *m as f64 / medians[0] as f64);
    }
    Ok(())
}

fn spawn_sink(host: &TestHost) -> anyhow::Result<Child> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", host.ns_host))
        .arg(bin("netprobe"))
        .args(["sink", SINK])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the sink")?;
    read_until(&mut lines(&mut child), |v| v.get("serving").is_some())
        .context("sink did not start")?;
    Ok(child)
}

fn ns(out: &[serde_json::Value]) -> anyhow::Result<u64> {
    let r = out.first().context("connect-bench printed nothing")?;
    if r["failed"] != 0 {
        bail!("connects failed: {r}");
    }
    r["ns_per_connect"].as_u64().context("no figure")
}
