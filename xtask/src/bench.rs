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
    use_release_binaries()?;
    let mut host = TestHost::with_config(
        "bench",
        &format!("[proxy]\nunknown_destinations = \"tunnel\"\n[network]\nallow = [\"{SINK}\"]\n"),
    );
    host.start_daemon();
    // 100,000 connects per target to one sink would otherwise run the ephemeral ports into
    // TIME_WAIT and overflow the sink's accept queue, and connect() would time port searches
    // and SYN retransmits instead of the hooks.
    host.sysctl("net.ipv4.tcp_tw_reuse=1");
    host.sysctl("net.core.somaxconn=65535");
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

/// `cargo xtask bench-proxy`: the reference peers (../shared/perf-peers: an nginx HTTPS
/// JSON-RPC upstream on 127.0.0.2:8443, nginx and haproxy terminating TLS in front of it) and
/// the enforcer, measured in one interleaved run by the peers' own script, wrk running as an
/// agent for the enforcer so the kernel redirect carries it. Adds CPU per request for each
/// proxy at each concurrency: its CPU (from /proc, read as each wrk run starts) during the
/// runs against it, over the requests those runs completed.
///
/// `threads` is the enforcer's worker threads: 1 compares like for like with the reference
/// proxies (one nginx worker, one haproxy thread); 0 uses one per CPU.
pub fn proxy(reps: u32, threads: u32) -> anyhow::Result<()> {
    crate::require_root("the proxy benchmark")?;
    crate::ensure_bpffs()?;
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = workspace_root()?;
    let peers = root.join("../shared/perf-peers/peers.sh");
    if !peers.exists() {
        bail!(
            "{} is missing (the reference peers live in ../shared/perf-peers)",
            peers.display()
        );
    }
    let dir = std::env::temp_dir().join("enforcer-bench-proxy");
    let status = Command::new("bash")
        .arg(&peers)
        .arg("up")
        .arg(&dir)
        .status()?;
    if !status.success() {
        bail!("perf peers did not come up");
    }
    let result = run_proxy_bench(&root, &peers, &dir, reps, threads);
    let _ = Command::new("bash")
        .arg(&peers)
        .arg("down")
        .arg(&dir)
        .status();
    result
}

fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf())
}

fn run_proxy_bench(
    root: &std::path::Path,
    peers: &std::path::Path,
    dir: &std::path::Path,
    reps: u32,
    threads: u32,
) -> anyhow::Result<()> {
    let enforcer = root.join("target/release/enforcer");
    let cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(String::from))?
        })
        .context("no cgroup2 mount")?;
    let config = dir.join("enforcer.toml");
    // The full data path: a policy decides every call (a forbid that does not match, then the
    // agent's permit), the detectors scan the result, and each call gets a receipt.
    let policy = dir.join("policy.cedar");
    std::fs::write(
        &policy,
        "@id(\"no-deletes\")\n@reason(\"destructive_tool\")\nforbid(principal, action == Action::\"tools/call\", resource)\nwhen { resource.name like \"delete_*\" };\n\n\
         @id(\"bench-tools\")\npermit(principal in Agent::\"bench\", action == Action::\"tools/call\", resource);\n",
    )?;
    // A fresh store each run: an earlier run's receipts would be re-indexed in the background
    // while this one is measured.
    let _ = std::fs::remove_dir_all(dir.join("enforcer-state/store"));
    let _ = std::fs::remove_dir_all(dir.join("enforcer-state/receipts"));
    std::fs::write(
        &config,
        format!(
            "[paths]\nstate_dir = \"{d}/enforcer-state\"\nruntime_dir = \"{d}/enforcer-run\"\n\
             pin_dir = \"/sys/fs/bpf/enforcer-bench\"\n\
             [policy]\nfile = \"{d}/policy.cedar\"\n\
             [proxy]\nworker_threads = {threads}\n[agents]\ncgroup_root = \"{cgroup2}/enforcer-bench-agents\"\n\
             [[connectors]]\nid = \"perf-upstream\"\nmatch = [\"127.0.0.2:8443\"]\ntls = {{ ca = \"{d}/pki/ca.crt\" }}\n",
            d = dir.display(),
            threads = threads,
        ),
    )?;
    // The default log level, as shipped (per-call lines are debug).
    let mut daemon = Command::new(&enforcer)
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .env_remove("ENFORCER_LOG")
        .spawn()
        .context("starting the enforcer")?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pids = [
        ("enforcer", vec![daemon.id() as i32]),
        ("nginx", children_of(&pid_file(&dir.join("logs/nginx.pid")))),
        ("haproxy", vec![pid_file(&dir.join("logs/haproxy.pid"))]),
    ];
    let extra = format!(
        "enforcer={} --config {} exec --agent bench --",
        enforcer.display(),
        config.display()
    );
    let results = dir.join("results");
    let earlier: Vec<std::ffi::OsString> = std::fs::read_dir(&results)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    let mut child = Command::new("bash")
        .arg(peers)
        .arg("bench")
        .arg(dir)
        .arg(reps.to_string())
        .env("EXTRA", &extra)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Read while the runs go on (the loop below polls), printed once they are done.
    let mut stdout = child.stdout.take().context("bench stdout")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    // Each proxy's CPU ticks whenever a wrk run starts (its result file appears), so each
    // run's CPU is told apart: a proxy is charged only for the runs against it, per
    // concurrency (its idle time during the others' runs is left out).
    let mut marks: Vec<(String, Vec<u64>)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let status = loop {
        if let Some(run) = newest_run_dir(&results, &earlier) {
            for e in std::fs::read_dir(&run)?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if seen.insert(name.clone()) {
                    marks.push((name, pids.iter().map(|(_, p)| cpu_ticks(p)).collect()));
                }
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let end: Vec<u64> = pids.iter().map(|(_, p)| cpu_ticks(p)).collect();
    let stdout = out_reader.join().unwrap_or_default();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = Command::new(&enforcer)
        .arg("--config")
        .arg(&config)
        .args(["daemon", "--cleanup"])
        .status();
    // The agents root and its instance cgroups (empty once wrk has exited).
    let agents = std::path::Path::new(&cgroup2).join("enforcer-bench-agents");
    for d in [agents.join("bench"), agents] {
        let _ = std::fs::remove_dir(d);
    }
    print!("{stdout}");
    if !status.success() {
        bail!("peers.sh bench failed");
    }
    let raw = stdout
        .lines()
        .find_map(|l| l.strip_prefix("raw: "))
        .context("no raw results directory")?;
    let raw = std::path::Path::new(raw);
    // CPU per request: a proxy's CPU during the runs against it / the requests it served.
    let hz = 100.0; // USER_HZ
    println!(
        "\n{:<9} {:>4} {:>10} {:>8} {:>16}",
        "proxy", "c", "requests", "cpu_s", "cpu_us/request"
    );
    for (i, (name, _)) in pids.iter().enumerate() {
        for c in ["1", "64"] {
            let prefix = format!("{name}_c{c}_");
            let (mut requests, mut ticks) = (0u64, 0u64);
            for (k, (file, at)) in marks.iter().enumerate() {
                if !file.starts_with(&prefix) {
                    continue;
                }
                let next = marks.get(k + 1).map_or(&end, |(_, t)| t);
                ticks += next[i].saturating_sub(at[i]);
                requests += requests_in(&raw.join(file))?;
            }
            let cpu_s = ticks as f64 / hz;
            let per = if requests > 0 {
                cpu_s * 1e6 / requests as f64
            } else {
                0.0
            };
            println!("{name:<9} {c:>4} {requests:>10} {cpu_s:>8.1} {per:>16.1}");
        }
    }
    Ok(())
}

/// The run directory `peers.sh bench` created (the newest one not in `earlier`).
fn newest_run_dir(
    results: &std::path::Path,
    earlier: &[std::ffi::OsString],
) -> Option<std::path::PathBuf> {
    std::fs::read_dir(results)
        .ok()?
        .flatten()
        .filter(|e| !earlier.contains(&e.file_name()))
        .map(|e| e.path())
        .max()
}

fn pid_file(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn children_of(pid: &i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// utime + stime of the processes (all their threads), in clock ticks.
fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Requests wrk completed in one run (its output file).
fn requests_in(file: &std::path::Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0))
}

/// Policy evaluation, receipt appends and audit search, each printed by the release binary.
pub fn audit(rules: usize, receipts: usize) -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let enforcer = root.join("target/release/enforcer");
    let config = root.join("target/bench-audit.toml");
    std::fs::write(&config, "")?;
    for args in [
        vec![
            "policy".to_string(),
            "bench".into(),
            "--rules".into(),
            "10".into(),
        ],
        vec![
            "policy".into(),
            "bench".into(),
            "--rules".into(),
            rules.to_string(),
        ],
        vec![
            "audit".into(),
            "bench".into(),
            "--receipts".into(),
            receipts.to_string(),
        ],
    ] {
        println!("$ enforcer {}", args.join(" "));
        let status = std::process::Command::new(&enforcer)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .status()?;
        anyhow::ensure!(status.success(), "enforcer {args:?} failed");
    }
    Ok(())
}

/// `cargo xtask bench-kill`: time from a confirmed revocation to the last live flow of the
/// target destroyed, for 1, 100 and 1,000 held flows (each: the agent's socket and two proxy
/// legs), and how fast the agent's reconnect is refused.
pub fn kill() -> anyhow::Result<()> {
    crate::require_root("the benchmark")?;
    crate::ensure_bpffs()?;
    use_release_binaries()?;
    let mut host = TestHost::with_config("benchkill", enforcer_tests::TUNNEL_CONFIG);
    host.start_daemon();
    let dest = host.upstream_v4(7010).to_string();
    println!(
        "{:>6} {:>12} {:>14} {:>17} {:>16} {:>14} {:>16}",
        "flows",
        "kill us",
        "cli->last",
        "confirmed->last",
        "first->last dead",
        "reconnect",
        "refused in us"
    );
    for (round, n) in [1usize, 100, 1000].into_iter().enumerate() {
        let agent = format!("kill{round}");
        let mut holder = host.spawn_agent(&agent, "i1", &["hold-many", &dest, &n.to_string()]);
        let mut out = lines(&mut holder);
        let held = read_until(&mut out, |v| {
            v.get("held").is_some() || v.get("held_failed").is_some()
        })
        .context("holder output")?;
        if held["held"] != n {
            bail!("could not hold {n} flows: {held}");
        }
        let t0 = enforcer_tests::monotonic_ns();
        let rev = host.enforcer(&[
            "revoke",
            "--agent",
            &agent,
            "--reason",
            "kill benchmark",
            "--yes",
            "--json",
        ]);
        if !rev.status.success() {
            bail!("revoke failed: {}", String::from_utf8_lossy(&rev.stderr));
        }
        let report: serde_json::Value = serde_json::from_slice(
            String::from_utf8_lossy(&rev.stdout)
                .lines()
                .last()
                .unwrap_or("{}")
                .as_bytes(),
        )?;
        let dead = read_until(&mut out, |v| v.get("last_dead_ns").is_some()).context("deaths")?;
        let again = read_until(&mut out, |v| v.get("reconnect").is_some()).context("reconnect")?;
        let _ = holder.wait();
        let last = dead["last_dead_ns"].as_u64().unwrap_or(0);
        let first = dead["first_dead_ns"].as_u64().unwrap_or(0);
        let confirmed = report["received_monotonic_ns"].as_u64().unwrap_or(t0);
        println!(
            "{:>6} {:>12} {:>11.2} ms {:>14.2} ms {:>13.2} ms {:>14} {:>16}",
            n,
            report["kill"]["elapsed"],
            last.saturating_sub(t0) as f64 / 1e6,
            last.saturating_sub(confirmed) as f64 / 1e6,
            last.saturating_sub(first) as f64 / 1e6,
            again["reconnect"]["error"]
                .as_str()
                .map(|_| "refused")
                .unwrap_or("CONNECTED"),
            again["reconnect_us"]
        );
    }
    println!("(kill us: the daemon's socket destruction, both legs; cli->last: from the CLI's start, incl. its process start and the preview, to the last flow's read returning; confirmed->last: from the daemon receiving the confirmed revocation to the last flow's read returning, on CLOCK_MONOTONIC)");
    Ok(())
}

/// Build the release binaries and make the test harness run them.
fn use_release_binaries() -> anyhow::Result<()> {
    crate::cargo(&["build", "--release", "--bins"])?;
    let release = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .context("target directory")?
        .join("release");
    std::env::set_var("ENFORCER_BIN_DIR", release);
    Ok(())
}
