//! Developer workflows that a plain `cargo build` does not cover.
//!
//!   cargo xtask setup         install what a fresh machine lacks (tests and demo run it first)
//!   cargo xtask test          build everything, then run every test (privileged: needs root)
//!   cargo xtask demo          the self-contained demonstration on this host (needs root)
//!   cargo xtask install       the release binary and a commented default config
//!   cargo xtask bench-connect cost of the connect hooks: connect()+close inside vs outside
//!   cargo xtask bench-proxy   the proxy vs direct, beside nginx and haproxy (shared/perf-peers)
//!   cargo xtask bench-audit   policy evaluation with 1,000 rules; receipt appends; search over 1M
//!   cargo xtask bench-kill    revocation to last flow destroyed for 1, 100, 1,000 flows

mod bench;
mod demo;
mod install;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks to build and test (rust-src, bpf-linker, system tools,
    /// the MCP peers' Python environment, bpffs); skips what is present.
    Setup,
    /// Build all binaries, then run the whole test suite (unit and privileged end-to-end).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the demonstration: daemon, upstream in its own namespace, an agent, a revocation.
    Demo,
    /// Install the release binary and a commented default config.
    Install {
        /// Stage into this directory instead of / (for packaging).
        #[arg(long)]
        destdir: Option<std::path::PathBuf>,
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
    },
    /// Benchmark the proxy: an HTTPS JSON-RPC upstream direct vs through nginx, haproxy and
    /// the enforcer (TLS both legs), c=1 and c=64, interleaved, with CPU per request.
    BenchProxy {
        /// Interleaved repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: u32,
        /// Enforcer worker threads (1 = like the single-worker reference proxies; 0 = per CPU).
        #[arg(long, default_value_t = 1)]
        threads: u32,
    },
    /// Benchmark the connect hooks: connect()+close loops inside vs outside the agents subtree.
    BenchConnect {
        /// Connections per round.
        #[arg(long, default_value_t = 20000)]
        count: u32,
    },
    /// Time from a confirmed revocation to the last live flow destroyed (1, 100, 1,000
    /// flows) and how fast a reconnect is refused.
    BenchKill,
    /// Policy evaluation p50/p99 with N rules, receipt appends per second, and search
    /// latency over a store of M receipts (release build, temporary stores).
    BenchAudit {
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        #[arg(long, default_value_t = 1_000_000)]
        receipts: usize,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Setup => require_root("setup").and_then(|_| setup::run_all()),
        Cmd::Test { args } => test(&args),
        Cmd::Demo => demo::run(),
        Cmd::Install { destdir, prefix } => install::run(destdir, &prefix),
        Cmd::BenchConnect { count } => bench::connect(count),
        Cmd::BenchProxy { reps, threads } => bench::proxy(reps, threads),
        Cmd::BenchAudit { rules, receipts } => bench::audit(rules, receipts),
        Cmd::BenchKill => bench::kill(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run `cargo` with `args`, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("cargo {args:?}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix_is_root() {
        bail!("{what} needs root (BPF, cgroups, network namespaces): run it with sudo");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    require_root("the test suite")?;
    setup::run_all()?;
    // The end-to-end tests run the real `enforcer` binary: build every binary first.
    // (The default members: the eBPF crate is built only for the BPF target, by build.rs.)
    cargo(&["build", "--bins"])?;
    let mut args = vec!["test"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

pub fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()?;
        if !st.success() {
            bail!("cannot mount bpffs on /sys/fs/bpf");
        }
    }
    Ok(())
}
