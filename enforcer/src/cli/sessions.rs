//! `enforcer sessions` and `enforcer connectors`: live state from the daemon's admin API.

use std::process::ExitCode;

use serde_json::Value;

use crate::{cli::admin, config::Config};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    command: Option<SessionsCommand>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum SessionsCommand {
    /// End sessions at the protocol level (MCP session ids answered 404, server sessions
    /// closed with DELETE, client flows closed) and, for an agent or instance, in the kernel
    /// (both legs' sockets destroyed). Recorded in the admin log.
    Terminate(TerminateArgs),
}

#[derive(clap::Args)]
#[group(id = "scope", required = true, multiple = false)]
struct Scope {
    /// One enforcer session (see `enforcer sessions`).
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    /// `agent/instance`, a unique instance name, or its cgroup id.
    #[arg(long)]
    instance: Option<String>,
}

#[derive(clap::Args)]
struct TerminateArgs {
    #[command(flatten)]
    scope: Scope,
    /// Why (required; recorded).
    #[arg(long)]
    reason: String,
    #[arg(long)]
    json: bool,
}

fn terminate(config: &Config, a: TerminateArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "reason": a.reason, "sudo_user": admin::sudo_user() });
    for (k, v) in [
        ("session", &a.scope.session),
        ("agent", &a.scope.agent),
        ("instance", &a.scope.instance),
    ] {
        if let Some(v) = v {
            body[k] = serde_json::json!(v);
        }
    }
    let v = match admin::post(config, "/v1/sessions/terminate", &body) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if a.json {
        println!("{v}");
    } else {
        let ids: Vec<&str> = v["terminated"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "terminated {} session(s): {}; {} upstream session(s) closed with DELETE; admin record {}",
            ids.len(),
            ids.join(", "),
            v["upstream_deletes"],
            v["admin_record"].as_str().unwrap_or("")
        );
        if let Some(k) = v["kill"].as_object() {
            println!(
                "kernel: destroyed {} agent sockets and {} proxy legs in {} us",
                k["agent_sockets_destroyed"], k["proxy_legs_destroyed"], k["elapsed"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sessions_command(config: Config, args: SessionsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(SessionsCommand::Terminate(t)) => terminate(&config, t),
        None => sessions(config, Args { json: args.json }),
    }
}

/// Fetch a listing for a table; with `--json` print it as is and return None.
fn listing(config: &Config, path: &str, json: bool) -> Option<Result<Value, ExitCode>> {
    match admin::get(config, path) {
        Ok(v) if json => {
            println!("{v}");
            None
        }
        other => Some(other),
    }
}

pub fn sessions(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/sessions", args.json) {
        Some(Ok(v)) => v,
        Some(Err(code)) => return Ok(code),
        None => return Ok(ExitCode::SUCCESS),
    };
    let rows = v["sessions"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<16} {:<14} {:<16} {:<12} {:<8} {:>6} {:>6} {:>9} {:>9}  PROTOCOL SESSION IDS",
        "SESSION",
        "AGENT",
        "INSTANCE",
        "CONNECTOR",
        "STATE",
        "CALLS",
        "FLOWS",
        "IDLE_MS",
        "LIMIT_MS"
    );
    for s in rows {
        println!(
            "{:<16} {:<14} {:<16} {:<12} {:<8} {:>6} {:>6} {:>9} {:>9}  {}",
            s["id"].as_str().unwrap_or(""),
            s["owner"]["agent"].as_str().unwrap_or(""),
            s["owner"]["instance"].as_str().unwrap_or(""),
            s["connector"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["calls"].as_u64().unwrap_or(0),
            s["client_flows"].as_u64().unwrap_or(0),
            s["idle_ms"].as_u64().unwrap_or(0),
            s["idle_limit_ms"].as_u64().unwrap_or(0),
            s["protocol_session_ids"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn connectors(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/connectors", args.json) {
        Some(Ok(v)) => v,
        Some(Err(code)) => return Ok(code),
        None => return Ok(ExitCode::SUCCESS),
    };
    println!(
        "{:<14} {:<10} {:<32} {:<10} {:>10}  LAST ERROR",
        "CONNECTOR", "ROUTE", "BACKEND", "REACHABLE", "LATENCY_US"
    );
    for c in v["connectors"].as_array().cloned().unwrap_or_default() {
        let st = &c["status"];
        println!(
            "{:<14} {:<10} {:<32} {:<10} {:>10}  {}",
            c["id"].as_str().unwrap_or(""),
            c["route"].as_str().unwrap_or(""),
            c["backend"].as_str().unwrap_or(""),
            match st["reachable"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            },
            st["last_latency_us"]
                .as_u64()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            st["last_error"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn agents(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/agents", args.json) {
        Some(Ok(v)) => v,
        Some(Err(code)) => return Ok(code),
        None => return Ok(ExitCode::SUCCESS),
    };
    println!(
        "{:<20} {:<20} {:>10} {:<8} {:>6}  SESSIONS",
        "AGENT", "INSTANCE", "CGROUP", "REVOKED", "PIDS"
    );
    for a in v["agents"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<20} {:>10} {:<8}",
            a["agent"].as_str().unwrap_or(""),
            "*",
            a["cgroup_id"],
            if a["revoked"] == true { "yes" } else { "" }
        );
        for i in a["instances"].as_array().into_iter().flatten() {
            println!(
                "{:<20} {:<20} {:>10} {:<8} {:>6}  {}",
                "",
                i["instance"].as_str().unwrap_or(""),
                i["cgroup_id"],
                if i["revoked"] == true { "yes" } else { "" },
                i["processes"],
                i["sessions"]
                    .as_array()
                    .map(|s| s
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn bindings(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/bindings", args.json) {
        Some(Ok(v)) => v,
        Some(Err(code)) => return Ok(code),
        None => return Ok(ExitCode::SUCCESS),
    };
    println!(
        "{:<24} {:<14} {:<14} {:<10} {:<8} STATUS",
        "BINDING", "CONNECTOR", "AGENT", "USER", "MODE"
    );
    for b in v["bindings"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<14} {:<14} {:<10} {:<8} {}",
            b["reference"].as_str().unwrap_or(""),
            b["connector"].as_str().unwrap_or(""),
            b["agent"].as_str().unwrap_or("*"),
            b["user"].as_str().unwrap_or("*"),
            b["mode"].as_str().unwrap_or(""),
            b["problem"].as_str().unwrap_or("usable")
        );
    }
    Ok(ExitCode::SUCCESS)
}
