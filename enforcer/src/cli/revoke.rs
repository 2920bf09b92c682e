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
    cgroups::AgentsTree,
    config::Config,
    control::{
        self,
        admin_log::{self, AdminRecord, Who},
        client::ClientError,
    },
    kernel::KernelMaps,
    revocation::{self, Revocation, RevocationStore, Target, TargetSpec},
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
    /// Every agent process running as this user (name or uid), refused in the kernel.
    #[arg(long, group = "target")]
    user: Option<String>,
    /// A credential binding: its secret is no longer injected; calls needing it are refused.
    #[arg(long, group = "target")]
    binding: Option<String>,
    /// A connector: new flows to it are refused and its sessions ended.
    #[arg(long, group = "target")]
    connector: Option<String>,
    /// One enforcer session (impact preview; end it with `enforcer sessions terminate`).
    #[arg(long, group = "target")]
    session: Option<String>,
}

impl TargetArgs {
    pub fn agent(agent: &str) -> Self {
        Self {
            agent: Some(agent.to_string()),
            instance: None,
            user: None,
            binding: None,
            connector: None,
            session: None,
        }
    }

    fn spec(&self) -> TargetSpec {
        TargetSpec {
            agent: self.agent.clone(),
            instance: self.instance.clone(),
            user: self.user.clone(),
            binding: self.binding.clone(),
            connector: self.connector.clone(),
        }
    }

    fn body(&self) -> Value {
        match &self.session {
            Some(s) => json!({ "session": s }),
            None => serde_json::to_value(self.spec()).unwrap_or_default(),
        }
    }

    /// What the operator types to confirm.
    fn name(&self) -> &str {
        self.session.as_deref().unwrap_or_else(|| self.spec_name())
    }

    fn spec_name(&self) -> &str {
        [
            &self.agent,
            &self.instance,
            &self.user,
            &self.binding,
            &self.connector,
        ]
        .into_iter()
        .find_map(|f| f.as_deref())
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
pub struct DisableArgs {
    /// The agent to disable: all its instances, now and started later.
    #[arg(long)]
    agent: String,
    /// Why (required; recorded in the admin log).
    #[arg(long)]
    reason: String,
    /// Do not ask for confirmation (scripts).
    #[arg(long)]
    yes: bool,
    /// Show what would be touched, change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EnableArgs {
    /// The disabled agent to enable again.
    #[arg(long)]
    agent: String,
    /// Why (required; recorded in the admin log).
    #[arg(long)]
    reason: String,
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

/// Resolve a target without the daemon (break-glass), checking bindings and connectors
/// against the configuration.
fn resolve(config: &Config, tree: &AgentsTree, t: &TargetArgs) -> anyhow::Result<Target> {
    let store = RevocationStore::new(config.revocations_path());
    let target = t.spec().resolve(tree, &store)?;
    let known = match &target {
        Target::Binding { binding } => config.bindings.iter().any(|b| &b.id == binding),
        Target::Connector { connector } => config.connectors.iter().any(|c| &c.id == connector),
        _ => true,
    };
    anyhow::ensure!(known, "no {target} is configured");
    Ok(target)
}

pub fn impact_query(t: &TargetArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Value::Object(fields) = t.body() {
        for (k, v) in fields {
            if let Some(v) = v.as_str() {
                q.append_pair(&k, v);
            }
        }
    }
    format!("/v1/impact?{}", q.finish())
}

pub fn print_impact(v: &Value) {
    let verb = if v["scope"] == "session" {
        "terminating"
    } else {
        "revoking"
    };
    println!("Impact of {verb} {}:", v["target"].as_str().unwrap_or(""));
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
    let agents: Vec<String> = v["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    println!("  agents        {}", list(&agents));
    println!("  instances     {}", list(&instances));
    let bindings: Vec<String> = v["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["reference"].as_str().unwrap_or("").to_string())
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
        "  live flows    {} agent sockets, {} proxy legs ({} client flows in these sessions)",
        v["flows"]["agent_sockets"], v["flows"]["proxy_legs"], v["flows"]["client_flows"]
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
pub(super) fn confirm(name: &str) -> bool {
    eprint!("Type {name:?} to confirm: ");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == name
}

pub fn run(config: Config, args: RevokeArgs) -> anyhow::Result<ExitCode> {
    revoke_as(config, args, "revoke")
}

/// `enforcer disable --agent`: the agent-wide revocation, recorded as a disable.
pub fn disable(config: Config, args: DisableArgs) -> anyhow::Result<ExitCode> {
    let revoke = RevokeArgs {
        target: TargetArgs::agent(&args.agent),
        reason: args.reason,
        yes: args.yes,
        dry_run: args.dry_run,
        json: args.json,
    };
    revoke_as(config, revoke, "disable")
}

/// `enforcer enable --agent`: lift a disable, recorded.
pub fn enable(config: Config, args: EnableArgs) -> anyhow::Result<ExitCode> {
    let lift = ReinstateArgs {
        target: TargetArgs::agent(&args.agent),
        reason: args.reason,
        json: args.json,
    };
    reinstate_as(config, lift, "enable")
}

fn revoke_as(config: Config, args: RevokeArgs, action: &str) -> anyhow::Result<ExitCode> {
    if args.target.session.is_some() {
        eprintln!("enforcer: a session is ended with `enforcer sessions terminate --session ID`");
        return Ok(ExitCode::from(exit::USAGE));
    }
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
            body["action"] = json!(action);
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
                print_kill(&v["target"], &v["kill"], action);
                println!(
                    "ended {} session(s); admin record {}",
                    v["sessions_ended"].as_array().map_or(0, Vec::len),
                    v["admin_record"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotRunning(_)) => break_glass_revoke(config, args, action),
        Err(e) => Ok(admin::report(&e)),
    }
}

fn print_kill(target: &Value, kill: &Value, action: &str) {
    let target = match target {
        Value::Object(_) => serde_json::from_value::<Target>(target.clone())
            .map(|t| t.to_string())
            .unwrap_or_default(),
        other => other.as_str().unwrap_or("").to_string(),
    };
    let done = if action == "disable" {
        "disabled"
    } else {
        "revoked"
    };
    println!("{done} {target}: new connects are refused");
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
fn break_glass_revoke(config: Config, args: RevokeArgs, action: &str) -> anyhow::Result<ExitCode> {
    eprintln!(
        "BREAK-GLASS MODE: the daemon is not running; acting on the pinned kernel maps directly"
    );
    let tree = AgentsTree::new(config.agents.cgroup_root.as_deref())?;
    let store = RevocationStore::new(config.revocations_path());
    let target = resolve(&config, &tree, &args.target)?;
    let mut maps = KernelMaps::open(&config.paths.pin_dir)
        .context("the kernel programs are not loaded (nothing to enforce on this host)")?;
    let (ids, _) = revocation::kill_scope(&tree, &target)?;
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
        action: action.into(),
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
        print_kill(
            &json!(target.to_string()),
            &serde_json::to_value(&report)?,
            action,
        );
        println!(
            "break-glass: admin record spooled to {} (merged into the admin log when the daemon starts)",
            spool.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reinstate(config: Config, args: ReinstateArgs) -> anyhow::Result<ExitCode> {
    reinstate_as(config, args, "reinstate")
}

fn reinstate_as(config: Config, args: ReinstateArgs, action: &str) -> anyhow::Result<ExitCode> {
    if args.target.session.is_some() {
        eprintln!("enforcer: sessions are not revoked, so there is nothing to reinstate");
        return Ok(ExitCode::from(exit::USAGE));
    }
    let mut body = args.target.body();
    body["reason"] = json!(args.reason);
    body["action"] = json!(action);
    body["sudo_user"] = admin::sudo_user();
    let socket = control::socket_path(&config.paths.runtime_dir);
    match control::client::post(&socket, "/v1/revocations/lift", &body) {
        Ok(v) => {
            if args.json {
                println!("{v}");
            } else if v["was_revoked"] == true {
                let done = if action == "enable" {
                    "enabled"
                } else {
                    "reinstated"
                };
                println!(
                    "{done} {} (admin record {})",
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
            let target = resolve(&config, &tree, &args.target)?;
            let mut maps = KernelMaps::open(&config.paths.pin_dir)
                .context("the kernel programs are not loaded")?;
            let existed = revocation::reinstate(&tree, &store, &mut maps, &target)?;
            let record = AdminRecord {
                time: super::now_rfc3339(),
                who: who(),
                action: action.into(),
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
        Err(e) => Ok(admin::report(&e)),
    }
}
