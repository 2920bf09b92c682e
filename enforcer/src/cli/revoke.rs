//! `enforcer revoke` and `enforcer reinstate`. With the daemon running they go through its
//! admin API (which records them in the admin log): the impact is shown first, a reason is
//! required, and the target's name must be typed to confirm (or `--yes`); `--dry-run` stops
//! after the preview. With the daemon down they run in break-glass mode: the CLI acts on the
//! pinned maps and destroys the sockets itself, and spools its admin record for the daemon to
//! merge when it starts.

use std::{io::BufRead as _, process::ExitCode};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::{admin, exit};
use crate::{
    cgroups::{self, AgentsTree},
    config::Config,
    control::{
        self,
        admin_log::{self, AdminRecord, Who},
        client::ClientError,
    },
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

impl TargetArgs {
    fn body(&self) -> Value {
        match (&self.agent, &self.instance) {
            (Some(a), _) => json!({ "agent": a }),
            (_, Some(i)) => json!({ "instance": i }),
            _ => Value::Null,
        }
    }

    /// What the operator types to confirm.
    fn name(&self) -> &str {
        self.agent
            .as_deref()
            .or(self.instance.as_deref())
            .unwrap_or_default()
    }
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (required; recorded with the revocation and in the admin log).
    #[arg(long)]
    reason: String,
    /// Do not ask for confirmation (scripts).
    #[arg(long)]
    yes: bool,
    /// Show what would be touched, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReinstateArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Why (required; recorded in the admin log).
    #[arg(long)]
    reason: String,
    #[arg(long)]
    json: bool,
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

pub fn impact_query(t: &TargetArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(a) = &t.agent {
        q.append_pair("agent", a);
    }
    if let Some(i) = &t.instance {
        q.append_pair("instance", i);
    }
    format!("/v1/impact?{}", q.finish())
}

pub fn print_impact(v: &Value) {
    println!("Impact of revoking {}:", v["target"].as_str().unwrap_or(""));
    if v["already_revoked"] == true {
        println!("  (already revoked: this re-applies it and kills what is live)");
    }
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    println!("  sessions      {}", sessions.len());
    for s in &sessions {
        println!(
            "    {} {}/{} -> {} ({}, {} calls, {} client flows)",
            s["id"].as_str().unwrap_or(""),
            s["owner"]["agent"].as_str().unwrap_or(""),
            s["owner"]["instance"].as_str().unwrap_or(""),
            s["connector"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["calls"],
            s["client_flows"]
        );
    }
    let instances: Vec<String> = v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{}/{}",
                i["agent"].as_str().unwrap_or(""),
                i["instance"].as_str().unwrap_or("")
            )
        })
        .collect();
    println!("  instances     {}", list(&instances));
    let bindings: Vec<String> = v["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| format!("{}@v{}", b["id"].as_str().unwrap_or(""), b["version"]))
        .collect();
    println!("  bindings      {}", list(&bindings));
    let connectors: Vec<String> = v["connectors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    println!("  connectors    {}", list(&connectors));
    println!(
        "  live flows    {} agent sockets, {} proxy legs",
        v["flows"]["agent_sockets"], v["flows"]["proxy_legs"]
    );
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// Ask the operator to type the target's name; false when they do not.
fn confirm(name: &str) -> bool {
    eprint!("Type {name:?} to confirm: ");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == name
}

pub fn run(config: Config, args: RevokeArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        eprintln!("enforcer: --reason must say why (it is recorded)");
        return Ok(ExitCode::from(exit::USAGE));
    }
    let socket = control::socket_path(&config.paths.runtime_dir);
    match control::client::get(&socket, &impact_query(&args.target)) {
        Ok(impact) => {
            if args.dry_run && args.json {
                println!("{impact}");
                return Ok(ExitCode::SUCCESS);
            }
            // With --json, stdout carries one JSON document (the preview is in it).
            if !args.json {
                print_impact(&impact);
            }
            if args.dry_run {
                println!("dry run: nothing changed");
                return Ok(ExitCode::SUCCESS);
            }
            if !args.yes && !confirm(args.target.name()) {
                eprintln!("enforcer: not confirmed; nothing changed");
                return Ok(ExitCode::from(exit::FAILURE));
            }
            let mut body = args.target.body();
            body["reason"] = json!(args.reason);
            body["sudo_user"] = admin::sudo_user();
            let v = match admin::post(&config, "/v1/revocations", &body) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if args.json {
                let mut v = v;
                v["impact"] = impact;
                println!("{v}");
            } else {
                print_kill(&v["target"], &v["kill"]);
                println!(
                    "ended {} session(s); admin record {}",
                    v["sessions_ended"].as_array().map_or(0, Vec::len),
                    v["admin_record"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotRunning(_)) => break_glass_revoke(config, args),
        Err(e) => {
            eprintln!("enforcer: {e}");
            Ok(ExitCode::from(match e {
                ClientError::NoAccess(_) | ClientError::Refused(_) => exit::REFUSED,
                _ => exit::FAILURE,
            }))
        }
    }
}

fn print_kill(target: &Value, kill: &Value) {
    let target = match target {
        Value::Object(_) => serde_json::from_value::<Target>(target.clone())
            .map(|t| t.to_string())
            .unwrap_or_default(),
        other => other.as_str().unwrap_or("").to_string(),
    };
    println!("revoked {target}: new connects are refused");
    println!(
        "killed {} of {} agent sockets and {} of {} proxy legs in {} us{}",
        kill["agent_sockets_destroyed"],
        kill["agent_sockets_found"],
        kill["proxy_legs_destroyed"],
        kill["proxy_legs_found"],
        kill["elapsed"],
        match kill["failed"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} could not be destroyed)"),
            _ => String::new(),
        }
    );
}

fn who() -> Who {
    let (uid, _) = super::invoker();
    Who {
        uid,
        user: crate::identity::user_name(uid),
        sudo_user: std::env::var("SUDO_USER").ok(),
    }
}

/// The daemon is down: act on the pinned maps directly and spool the admin record.
fn break_glass_revoke(config: Config, args: RevokeArgs) -> anyhow::Result<ExitCode> {
    eprintln!(
        "BREAK-GLASS MODE: the daemon is not running; acting on the pinned kernel maps directly"
    );
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    let store = RevocationStore::new(config.revocations_path());
    let target = resolve(&tree, &store, &args.target)?;
    let mut maps = KernelMaps::open(&config.paths.pin_dir)
        .context("the kernel programs are not loaded (nothing to enforce on this host)")?;
    let ids: Vec<u64> = match &target {
        Target::Agent { agent } => tree
            .agents()
            .into_iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, id)| id)
            .collect(),
        Target::Instance { cgroup_id, .. } => vec![*cgroup_id],
    };
    let (agent_sockets, proxy_legs) = revocation::count_sockets(&maps, &ids);
    eprintln!(
        "Impact of revoking {target}: {agent_sockets} agent sockets, {proxy_legs} proxy legs live"
    );
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && !confirm(args.target.name()) {
        eprintln!("enforcer: not confirmed; nothing changed");
        return Ok(ExitCode::from(exit::FAILURE));
    }
    let who = who();
    let rev = Revocation {
        target: target.clone(),
        reason: args.reason.clone(),
        by_uid: who.uid,
        by_user: who.user.clone(),
        at: super::now_rfc3339(),
    };
    let report = revocation::revoke(&tree, &store, &mut maps, rev)?;
    let record = AdminRecord {
        time: super::now_rfc3339(),
        who,
        action: "revoke".into(),
        target: target.to_string(),
        reason: args.reason,
        result: if report.failed == 0 { "ok" } else { "partial" }.into(),
        details: json!({ "kill": report }),
        mode: "break-glass".into(),
        ..Default::default()
    };
    let spool = admin_log::spool_path(&config.paths.state_dir);
    admin_log::spool(&spool, &record).context("spooling the admin record")?;
    if args.json {
        println!(
            "{}",
            json!({ "target": target, "revoked": true, "kill": report, "mode": "break-glass" })
        );
    } else {
        print_kill(&json!(target.to_string()), &serde_json::to_value(&report)?);
        println!(
            "break-glass: admin record spooled to {} (merged into the admin log when the daemon starts)",
            spool.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reinstate(config: Config, args: ReinstateArgs) -> anyhow::Result<ExitCode> {
    let mut body = args.target.body();
    body["reason"] = json!(args.reason);
    body["sudo_user"] = admin::sudo_user();
    let socket = control::socket_path(&config.paths.runtime_dir);
    match control::client::post(&socket, "/v1/revocations/lift", &body) {
        Ok(v) => {
            if args.json {
                println!("{v}");
            } else if v["was_revoked"] == true {
                println!(
                    "reinstated {} (admin record {})",
                    args.target.name(),
                    v["admin_record"].as_str().unwrap_or("")
                );
            } else {
                println!("{} was not revoked", args.target.name());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotRunning(_)) => {
            eprintln!("BREAK-GLASS MODE: the daemon is not running; acting on the pinned kernel maps directly");
            let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
            let store = RevocationStore::new(config.revocations_path());
            let target = resolve(&tree, &store, &args.target)?;
            let mut maps = KernelMaps::open(&config.paths.pin_dir)
                .context("the kernel programs are not loaded")?;
            let existed = revocation::reinstate(&tree, &store, &mut maps, &target)?;
            let record = AdminRecord {
                time: super::now_rfc3339(),
                who: who(),
                action: "reinstate".into(),
                target: target.to_string(),
                reason: args.reason,
                result: if existed { "ok" } else { "not_revoked" }.into(),
                details: json!({ "was_revoked": existed }),
                mode: "break-glass".into(),
                ..Default::default()
            };
            admin_log::spool(&admin_log::spool_path(&config.paths.state_dir), &record)?;
            println!(
                "{}",
                if existed {
                    format!("reinstated {target}")
                } else {
                    format!("{target} was not revoked")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("enforcer: {e}");
            Ok(ExitCode::from(match e {
                ClientError::NoAccess(_) | ClientError::Refused(_) => exit::REFUSED,
                _ => exit::FAILURE,
            }))
        }
    }
}
