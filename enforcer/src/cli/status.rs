//! `enforcer status`: what the kernel is enforcing right now, read from the pinned maps.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{
    config::Config,
    kernel::{self, addr::from_words, KernelMaps},
    revocation::RevocationStore,
};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let pin_dir = &config.paths.pin_dir;
    if !kernel::is_pinned(pin_dir) {
        anyhow::bail!(
            "no enforcement is attached ({} holds no pinned programs); start `enforcer daemon`",
            pin_dir.display()
        );
    }
    let maps = KernelMaps::open(pin_dir).context("opening pinned maps")?;
    let s = maps.settings();
    let daemon_running =
        s.daemon_pid != 0 && std::path::Path::new(&format!("/proc/{}", s.daemon_pid)).exists();
    let proxy_v4 = std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(s.proxy_ip4.to_ne_bytes())),
        s.proxy_port,
    );
    let proxy_v6 = std::net::SocketAddr::new(from_words(s.proxy_ip6), s.proxy_port);
    let revocations = RevocationStore::new(config.revocations_path()).load()?;
    let entries = maps.entry_counts();
    let counters = maps.counters();
    if args.json {
        let obj = serde_json::json!({
            "pin_dir": pin_dir,
            "daemon_pid": s.daemon_pid,
            "daemon_running": daemon_running,
            "proxy": [proxy_v4.to_string(), proxy_v6.to_string()],
            "agents_level": s.agents_level,
            "object_hash_matches": s.object_hash == kernel::object_hash(),
            "map_entries": entries.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "counters": counters.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "revocations": revocations,
        });
        println!("{obj}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("pinned state   {}", pin_dir.display());
    println!(
        "daemon         {}",
        if daemon_running {
            format!("running (pid {})", s.daemon_pid)
        } else {
            "not running: agent connects fail closed".to_string()
        }
    );
    println!("proxy          {proxy_v4} {proxy_v6}");
    println!(
        "map entries    {}",
        fmt_pairs(entries.iter().map(|(k, v)| (*k, *v as u64)))
    );
    println!("counters       {}", fmt_pairs(counters.iter().copied()));
    if revocations.is_empty() {
        println!("revocations    none");
    }
    for r in revocations {
        println!(
            "revoked        {} — {} (by {} at {})",
            r.target, r.reason, r.by_user, r.at
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_pairs<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) -> String {
    pairs
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
