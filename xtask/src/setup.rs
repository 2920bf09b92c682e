//! `cargo xtask setup`: everything a fresh machine lacks to build and test the enforcer,
//! installed only where missing (`test` and `demo` run it first; so does .ci/run).
//!
//! - rust-src for the toolchain that builds the eBPF programs (nightly, else stable with
//!   RUSTC_BOOTSTRAP, see enforcer/build.rs), and bpf-linker 0.10.4 (KERNEL-NOTES);
//! - system tools the tests drive: iproute2, util-linux, procps, curl, openssl, python3-venv;
//! - the MCP test peers' Python environment (tests/peers/.venv, pinned requirements);
//! - bpffs on /sys/fs/bpf.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn stdout(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("setup: {what}");
    let status = cmd.status().with_context(|| what.to_string())?;
    if !status.success() {
        bail!("setup: {what} failed ({status})");
    }
    Ok(())
}

pub fn run_all() -> anyhow::Result<()> {
    ebpf_toolchain()?;
    system_packages()?;
    peers_venv()?;
    crate::ensure_bpffs()
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    let nightly = stdout(Command::new("rustup").args(["toolchain", "list"]))
        .lines()
        .any(|l| l.starts_with("nightly"));
    let toolchain = if nightly { "nightly" } else { "stable" };
    let has_src = stdout(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .lines()
    .any(|l| l.starts_with("rust-src"));
    if !has_src {
        run(
            &format!("rust-src for {toolchain}"),
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]),
        )?;
    }
    let linker = stdout(Command::new("bpf-linker").arg("--version"));
    if !linker.contains("0.10.4") {
        run(
            "bpf-linker 0.10.4 (about 2 minutes)",
            Command::new(env!("CARGO")).args(["install", "bpf-linker@0.10.4", "--locked"]),
        )?;
    }
    Ok(())
}

fn system_packages() -> anyhow::Result<()> {
    let needed: Vec<&str> = [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
        ("sysctl", "procps"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        // `systemd-analyze verify` of the shipped units (the tests need the tool, not a
        // running systemd).
        ("systemd-analyze", "systemd"),
    ]
    .into_iter()
    .filter(|(tool, _)| !ok(Command::new("sh").args(["-c", &format!("command -v {tool}")])))
    .map(|(_, pkg)| pkg)
    .collect();
    let mut needed: Vec<&str> = needed;
    if !ok(Command::new("python3").args(["-c", "import venv, ensurepip"])) {
        needed.push("python3-venv");
    }
    needed.dedup();
    if needed.is_empty() {
        return Ok(());
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install {}", needed.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&needed)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn peers_venv() -> anyhow::Result<()> {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers");
    let venv = peers.join(".venv");
    let pinned = stdout(Command::new(venv.join("bin/pip")).arg("freeze"))
        .lines()
        .any(|l| l == "mcp==2.3.0");
    if pinned {
        return Ok(());
    }
    run(
        "MCP test peers' venv",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    )?;
    run(
        "MCP test peers (official Python SDK, pinned)",
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(peers.join("requirements.txt")),
    )
}
