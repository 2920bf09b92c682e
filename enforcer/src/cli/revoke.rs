//! `enforcer revoke` and `enforcer reinstate`. They act on the pinned maps directly, so they
//! work whether or not the daemon is running.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{
    cgroups::{self, AgentsTree},
    config::Config,
    kernel::KernelMaps,
    revocation::{self, Revocation, RevocationStore, Target},
};

#[derive(clap::Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// Every instance of this agent, including instances started later.
    #[arg(long, group = "target")]
    agent: Option<String>,
    /// One instance: `agent/instance`, a unique instance name, or its cgroup id.
    #[arg(long, group = "target")]
    instance: Option<String>,
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (recorded with the revocation).
    #[arg(long, default_value = "revoked from the CLI")]
    reason: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReinstateArgs {
    #[command(flatten)]
    target: TargetArgs,
}

fn resolve(tree: &AgentsTree, store: &RevocationStore, t: &TargetArgs) -> anyhow::Result<Target> {
    if let Some(agent) = &t.agent {
        cgroups::validate_name("agent", agent)?;
        return Ok(Target::Agent {
            agent: agent.clone(),
        });
    }
    let spec = t.instance.as_deref().expect("clap requires a target");
    match revocation::find_instance(tree, spec) {
        Ok(t) => Ok(t),
        // A revoked instance that has exited can still be reinstated by name.
        Err(e) => store
            .load()?
            .into_iter()
            .map(|r| r.target)
            .find(|t| matches!(t, Target::Instance { agent, instance, .. } if spec == instance || spec == format!("{agent}/{instance}")))
            .ok_or_else(|| e.into()),
    }
}

pub fn run(config: Config, args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    let store = RevocationStore::new(config.revocations_path());
    let target = resolve(&tree, &store, &args.target)?;
    let mut maps = KernelMaps::open(&config.paths.pin_dir)
        .context("the kernel programs are not loaded; start `enforcer daemon` first")?;
    let (uid, user) = super::invoker();
    let rev = Revocation {
        target: target.clone(),
        reason: args.reason,
        by_uid: uid,
        by_user: user,
        at: super::now_rfc3339(),
    };
    let report = revocation::revoke(&tree, &store, &mut maps, rev)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "target": target, "revoked": true, "kill": report })
        );
    } else {
        println!("revoked {target}: new connects are refused");
        println!(
            "killed {} of {} agent sockets and {} of {} proxy legs in {} us{}",
            report.agent_sockets_destroyed,
            report.agent_sockets_found,
            report.proxy_legs_destroyed,
            report.proxy_legs_found,
            report.elapsed.as_micros(),
            if report.failed > 0 {
                format!(" ({} could not be destroyed)", report.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reinstate(config: Config, args: ReinstateArgs) -> anyhow::Result<ExitCode> {
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    let store = RevocationStore::new(config.revocations_path());
    let target = resolve(&tree, &store, &args.target)?;
    let mut maps = KernelMaps::open(&config.paths.pin_dir)
        .context("the kernel programs are not loaded; start `enforcer daemon` first")?;
    if revocation::reinstate(&tree, &store, &mut maps, &target)? {
        println!("reinstated {target}");
    } else {
        println!("{target} was not revoked");
    }
    Ok(ExitCode::SUCCESS)
}
