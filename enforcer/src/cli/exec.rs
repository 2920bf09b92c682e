//! `enforcer exec`: run a command as an agent instance in a fresh cgroup.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Command, ExitCode},
};

use anyhow::Context as _;

use crate::{
    cgroups::{self, AgentsTree},
    cli::exit,
    config::Config,
    revocation::{RevocationStore, Target},
};

#[derive(clap::Args)]
pub struct Args {
    /// Agent (role) name.
    #[arg(long)]
    agent: String,
    /// Instance name (default: a fresh unique one).
    #[arg(long)]
    instance: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    cgroups::validate_name("agent", &args.agent)?;
    let instance = args.instance.unwrap_or_else(fresh_instance_name);
    // The kernel refuses a revoked agent's connects anyway; saying so up front is kinder.
    let store = RevocationStore::new(config.revocations_path());
    if let Some(rev) = store
        .load()?
        .into_iter()
        .find(|r| matches!(&r.target, Target::Agent { agent } if *agent == args.agent))
    {
        eprintln!(
            "enforcer: agent {} is revoked ({}; by {} at {}): not starting",
            args.agent, rev.reason, rev.by_user, rev.at
        );
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let (dir, id) = tree
        .create_instance(&args.agent, &instance)
        .with_context(|| format!("creating instance {}/{instance}", args.agent))?;
    tracing::debug!(agent = %args.agent, %instance, cgroup_id = id, "starting agent instance");

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (key, value) in trust_env(&config) {
        cmd.env(key, value);
    }
    let join_dir = dir.clone();
    // SAFETY: between fork and exec we only make syscalls (write to cgroup.procs, close_range).
    unsafe {
        cmd.pre_exec(move || {
            cgroups::join(&join_dir)?;
            // No inherited descriptors beyond stdio: a socket opened outside the subtree and
            // handed in would bypass the hooks (KERNEL-NOTES). CLOEXEC keeps std's own
            // exec-error pipe working until exec.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status();
    // Best effort: the directory stays if a process the agent left behind still lives there.
    let _ = std::fs::remove_dir(&dir);
    let status = status.with_context(|| format!("starting {:?}", args.command[0]))?;
    Ok(ExitCode::from(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128 + sig as u8,
        _ => exit::FAILURE,
    }))
}

fn fresh_instance_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("i{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// Trust variables for the enforcer's CA bundle (our CA + the system roots), once the CA
/// exists: OpenSSL and Python read SSL_CERT_FILE, requests REQUESTS_CA_BUNDLE, Node adds
/// NODE_EXTRA_CA_CERTS, the curl tool reads CURL_CA_BUNDLE, git GIT_SSL_CAINFO. Clients built
/// with bundled webpki roots ignore all of these (README).
fn trust_env(config: &Config) -> Vec<(&'static str, String)> {
    let bundle = config.ca_dir().join(crate::tls::ca::BUNDLE);
    if !bundle.exists() {
        return Vec::new();
    }
    let b = bundle.display().to_string();
    vec![
        ("SSL_CERT_FILE", b.clone()),
        ("REQUESTS_CA_BUNDLE", b.clone()),
        ("CURL_CA_BUNDLE", b.clone()),
        ("GIT_SSL_CAINFO", b.clone()),
        ("NODE_EXTRA_CA_CERTS", b),
    ]
}
