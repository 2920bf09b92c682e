//! `enforcer sessions|connectors|agents|bindings [show ID]`: live state from the daemon's
//! admin API, as tables (lists) or key/value blocks (one item), or JSON.

use std::process::ExitCode;

use serde_json::Value;

use crate::{cli::admin, config::Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    show: Option<ShowCommand>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum ShowCommand {
    /// One item in full, with what stands against it and what it is connected to.
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The id (connector, binding, session) or name (agent).
    id: String,
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
    /// One session in full: state, idle limit, connector path, binding, latest receipts.
    Show(ShowArgs),
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
    /// Every session of this user's agents (name or uid).
    #[arg(long)]
    user: Option<String>,
    /// Every session through this connector.
    #[arg(long)]
    connector: Option<String>,
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
        ("user", &a.scope.user),
        ("connector", &a.scope.connector),
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
        Some(SessionsCommand::Show(a)) => Ok(show(&config, "sessions", a, print_session)),
        None => sessions(
            config,
            Args {
                show: None,
                json: args.json,
            },
        ),
    }
}

/// Fetch a listing to print as a table. Err is the exit code when there is nothing more to
/// do: with `--json` the listing was printed as is; or the daemon refused.
fn listing(config: &Config, path: &str, json: bool) -> Result<Value, ExitCode> {
    let v = admin::get(config, path)?;
    if json {
        println!("{v}");
        return Err(ExitCode::SUCCESS);
    }
    Ok(v)
}

/// `X show ID` (printed with `print`), else the listing of `kind` for a table (see `listing`).
fn listing_or_show(
    config: &Config,
    kind: &str,
    args: Args,
    print: fn(&Value),
) -> Result<Value, ExitCode> {
    match args.show {
        Some(ShowCommand::Show(a)) => Err(show(config, kind, a, print)),
        None => listing(config, &format!("/v1/{kind}"), args.json),
    }
}

/// A JSON array of strings as "a, b, c".
fn names(v: &Value) -> String {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn sessions(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/sessions", args.json) {
        Ok(v) => v,
        Err(code) => return Ok(code),
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

/// `X show ID`: fetch one item; print it as JSON or with `print`.
fn show(config: &Config, kind: &str, a: ShowArgs, print: fn(&Value)) -> ExitCode {
    let id: String = form_urlencoded::byte_serialize(a.id.as_bytes()).collect();
    match admin::get(config, &format!("/v1/{kind}/{id}")) {
        Ok(v) if a.json => println!("{v}"),
        Ok(v) => print(&v),
        Err(code) => return code,
    }
    ExitCode::SUCCESS
}

/// One "key  value" line; JSON strings without quotes, absent values as "-".
fn field(key: &str, v: &Value) {
    let text = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    println!("{key:<18} {text}");
}

fn revocation_line(v: &Value) {
    if v.is_object() {
        println!(
            "{:<18} {} by {} at {}: {}",
            "revocation",
            v["target"].as_str().unwrap_or(""),
            v["by"].as_str().unwrap_or(""),
            v["at"].as_str().unwrap_or(""),
            v["reason"].as_str().unwrap_or("")
        );
    }
}

fn print_session(v: &Value) {
    let s = &v["session"];
    field("session", &s["id"]);
    field("agent", &s["owner"]["agent"]);
    field("instance", &s["owner"]["instance"]);
    field("user", &s["owner"]["user"]);
    field("client", &v["client"]);
    field("state", &s["state"]);
    field("created", &s["created"]);
    field("calls", &s["calls"]);
    field("in flight", &s["in_flight"]);
    field("client flows", &s["client_flows"]);
    field("idle ms", &s["idle_ms"]);
    field("idle limit ms", &s["idle_limit_ms"]);
    field("protocol ids", &s["protocol_session_ids"]);
    field("connector", &v["connector"]["id"]);
    field("route", &v["connector"]["route"]);
    field("backend", &v["connector"]["backend"]);
    field("route reachable", &v["connector"]["status"]["reachable"]);
    field("binding", &v["binding"]);
    println!("recent receipts:");
    for r in v["recent_receipts"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}  {} {}  {}",
            r["id"].as_str().unwrap_or(""),
            r["time"].as_str().unwrap_or(""),
            r["request"]["method"].as_str().unwrap_or(""),
            r["request"]["target"].as_str().unwrap_or(""),
            r["outcome"]["status"].as_str().unwrap_or("")
        );
    }
}

fn print_connector(c: &Value) {
    for k in [
        "id",
        "state",
        "matches",
        "backend",
        "route",
        "bind",
        "server_name",
        "mtls",
        "idle_limit_ms",
    ] {
        field(k, &c[k]);
    }
    field("reachable", &c["status"]["reachable"]);
    field("last latency us", &c["status"]["last_latency_us"]);
    field("last error", &c["status"]["last_error"]);
    field("bindings", &c["bindings"]);
    field("sessions", &c["sessions"]);
    revocation_line(&c["revocation"]);
}

fn print_binding(b: &Value) {
    for k in [
        "reference",
        "state",
        "connector",
        "agent",
        "user",
        "mode",
        "header",
        "secret_file",
        "usable",
        "problem",
        "sessions",
    ] {
        field(k, &b[k]);
    }
    revocation_line(&b["revocation"]);
}

fn print_agent(a: &Value) {
    field("agent", &a["agent"]);
    field("state", &a["state"]);
    field("cgroup", &a["cgroup_id"]);
    field("bindings", &a["bindings"]);
    revocation_line(&a["revocation"]);
    println!("instances:");
    for i in a["instances"].as_array().into_iter().flatten() {
        println!(
            "  {:<20} cgroup {:<8} {} pids {:?} sessions {}",
            i["instance"].as_str().unwrap_or(""),
            i["cgroup_id"],
            if i["revoked"] == true {
                "REVOKED"
            } else {
                "live   "
            },
            i["pids"].as_array().map(Vec::len).unwrap_or(0),
            names(&i["sessions"])
        );
    }
}

pub fn connectors(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing_or_show(&config, "connectors", args, print_connector) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    println!(
        "{:<14} {:<9} {:<10} {:<32} {:<10} {:>10}  LAST ERROR",
        "CONNECTOR", "STATE", "ROUTE", "BACKEND", "REACHABLE", "LATENCY_US"
    );
    for c in v["connectors"].as_array().cloned().unwrap_or_default() {
        let st = &c["status"];
        println!(
            "{:<14} {:<9} {:<10} {:<32} {:<10} {:>10}  {}",
            c["id"].as_str().unwrap_or(""),
            c["state"].as_str().unwrap_or(""),
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
    let v = match listing_or_show(&config, "agents", args, print_agent) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    println!(
        "{:<20} {:<20} {:>10} {:<9} {:>6}  SESSIONS",
        "AGENT", "INSTANCE", "CGROUP", "STATE", "PIDS"
    );
    for a in v["agents"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<20} {:>10} {:<9}",
            a["agent"].as_str().unwrap_or(""),
            "*",
            a["cgroup_id"],
            a["state"].as_str().unwrap_or("")
        );
        for i in a["instances"].as_array().into_iter().flatten() {
            println!(
                "{:<20} {:<20} {:>10} {:<9} {:>6}  {}",
                "",
                i["instance"].as_str().unwrap_or(""),
                i["cgroup_id"],
                if i["revoked"] == true {
                    "revoked"
                } else {
                    "live"
                },
                i["processes"],
                names(&i["sessions"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn bindings(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing_or_show(&config, "bindings", args, print_binding) {
        Ok(v) => v,
        Err(code) => return Ok(code),
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
            if b["state"] == "revoked" {
                "revoked"
            } else {
                b["problem"].as_str().unwrap_or("usable")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn exports(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match listing(&config, "/v1/export", args.json) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let Some(sinks) = v["sinks"].as_array() else {
        println!("no export sinks configured ([export] in the config)");
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "{:<16} {:<8} {:<8} {:>10} {:>10} {:>10} {:>10} {:<6} LAST ERROR",
        "SINK", "KIND", "SOURCE", "CURSOR", "BACKLOG", "DELIVERED", "FAILURES", "ALARM"
    );
    for s in sinks {
        for src in s["sources"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:<8} {:<8} {:>10} {:>10} {:>10} {:>10} {:<6} {}",
                s["id"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                src["source"].as_str().unwrap_or(""),
                src["cursor"],
                src["backlog"],
                s["delivered"],
                s["failures"],
                if s["alarm"] == true { "YES" } else { "" },
                s["last_error"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
