//! `enforcer drill RECEIPT`: the incident drill, walked step by step against the live daemon,
//! starting from one receipt. It shows each section of evidence, previews the revocation,
//! revokes the receipt's agent instance (the rehearsal target: never a whole agent), ends its
//! sessions, checks in the kernel maps that its flows are gone, and reports.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::{admin, audit::print_ticket, revoke::print_impact};
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The receipt to start from (e.g. a denial an agent developer reported).
    #[arg(required_unless_present = "simulate")]
    receipt: Option<String>,
    /// Rehearse on a private, throwaway setup instead of the live daemon: its own daemon and
    /// agents cgroup, a real MCP server with one destructive tool, one policy, and an agent
    /// that hits the policy, streams a long call, and keeps reconnecting after the revocation.
    #[arg(long, conflicts_with_all = ["receipt", "dry_run"])]
    simulate: bool,
    /// Do not ask before revoking the rehearsal target.
    #[arg(long)]
    yes: bool,
    /// Stop after the preview (steps 1-9): change nothing.
    #[arg(long)]
    dry_run: bool,
    /// End with the report as one JSON line.
    #[arg(long)]
    json: bool,
}

fn step(n: u32, title: &str) {
    println!("\n\x1b[1mStep {n:>2}: {title}\x1b[0m");
}

fn get(config: &Config, path: &str) -> Result<Value, ExitCode> {
    admin::get(config, path)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    if args.simulate {
        let walk = |c: &Config, receipt: &str| {
            walk(c, receipt, true, false).map(|(code, report)| (code == ExitCode::SUCCESS, report))
        };
        let (passed, report) = crate::rehearsal::simulate(&walk)?;
        if args.json {
            println!("{report}");
        }
        return Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::exit::FAILURE)
        });
    }
    let Some(receipt) = args.receipt.clone() else {
        eprintln!("enforcer: give a receipt id to start from, or --simulate for a rehearsal");
        return Ok(ExitCode::from(super::exit::USAGE));
    };
    let (code, report) = walk(&config, &receipt, args.yes, args.dry_run)?;
    if args.json {
        println!("{report}");
    }
    Ok(code)
}

/// Walk the twelve steps from `receipt`; returns the exit code and the report.
pub fn walk(
    config: &Config,
    receipt: &str,
    yes: bool,
    dry_run: bool,
) -> anyhow::Result<(ExitCode, Value)> {
    let config = config.clone();
    let mut report = json!({ "receipt": receipt });

    step(
        1,
        "start from one receipt: request, agent run, tool call, time window",
    );
    let r = match get(&config, &format!("/v1/receipts/{}", receipt)) {
        Ok(v) => v["receipt"].clone(),
        Err(code) => return Ok((code, report)),
    };
    print_ticket(&r);
    let (agent, instance) = (
        s(&r["actor"]["agent"]).to_string(),
        s(&r["actor"]["instance"]).to_string(),
    );
    let session = s(&r["session"]["enforcer_session"]).to_string();
    let window_start = r["time_ns"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(3_600_000_000_000);

    step(
        2,
        "search the audit around it: same actor, same session, the last hour",
    );
    let since = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(window_start),
    )
    .to_string();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("agent", &agent)
        .append_pair("instance", &instance)
        .append_pair("since", &since)
        .append_pair("limit", "20");
    let around = match get(&config, &format!("/v1/receipts?{}", q.finish())) {
        Ok(v) => v,
        Err(code) => return Ok((code, report)),
    };
    let receipts = around["receipts"].as_array().cloned().unwrap_or_default();
    for x in &receipts {
        println!(
            "  {} {} {:<14} {:<20} {}",
            s(&x["id"]),
            s(&x["time"]),
            s(&x["request"]["method"]),
            s(&x["request"]["target"]),
            s(&x["outcome"]["status"])
        );
    }
    let denials = receipts
        .iter()
        .filter(|x| {
            matches!(
                s(&x["outcome"]["status"]),
                "denied" | "dlp_blocked" | "approval_required"
            )
        })
        .count();
    println!(
        "  {} receipts for {agent}/{instance} since {since}, {denials} refused",
        receipts.len()
    );
    report["related_receipts"] = json!(receipts.len());
    report["refused"] = json!(denials);

    step(
        3,
        "rebuild the actor chain: user, agent, agent instance, client surface",
    );
    let a = &r["actor"];
    println!(
        "  user {} (uid {}) > agent {} > instance {} (cgroup {}) > pid {} {}\n  client surface: {} / {}",
        s(&a["user"]), a["uid"], agent, instance, a["instance_id"], a["pid"], s(&a["surface"]["exe"]),
        a["surface"]["client"].as_str().unwrap_or("-"), a["surface"]["user_agent"].as_str().unwrap_or("-")
    );

    step(
        4,
        "read the policy ticket: version, matched rule, environment, outcome",
    );
    let p = &r["policy"];
    println!(
        "  version {} · rule {} · environment {} · decision {} · outcome {}",
        s(&p["version"]),
        p["rule"].as_str().unwrap_or("(default)"),
        s(&p["environment"]),
        s(&p["decision"]),
        s(&r["outcome"]["status"])
    );
    if let Ok(state) = get(&config, "/v1/policy") {
        println!(
            "  in force now: {} ({} rules, mode {})",
            state["active"]["id"].as_str().unwrap_or("none"),
            state["rules"].as_array().map_or(0, Vec::len),
            s(&state["mode"])
        );
    }

    step(
        5,
        "credential mode and binding reference (never the secret)",
    );
    println!(
        "  mode {} · binding {}",
        s(&r["credential"]["mode"]),
        r["credential"]["binding"].as_str().unwrap_or("-")
    );

    step(
        6,
        "trace the connector path: connector, route, backend, route status now",
    );
    let connector = s(&r["connector"]["connector"]).to_string();
    if let Ok(c) = get(&config, "/v1/connectors") {
        for k in c["connectors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|k| s(&k["id"]) == connector)
        {
            println!(
                "  {} · route {} · backend {} · reachable {} · last error {}",
                s(&k["id"]),
                s(&k["route"]),
                s(&k["backend"]),
                k["status"]["reachable"],
                k["status"]["last_error"].as_str().unwrap_or("-")
            );
        }
    }

    step(7, "client and backend session state, idle limits");
    let live = get(&config, "/v1/sessions").unwrap_or_default();
    let mine: Vec<&Value> = live["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| s(&x["owner"]["agent"]) == agent && s(&x["owner"]["instance"]) == instance)
        .collect();
    if mine.is_empty() {
        println!("  no live session of {agent}/{instance} (receipt's session {session} has ended)");
    }
    for x in &mine {
        println!(
            "  {} -> {} · {} · {} calls · {} client flows · idle {} ms of {} ms · MCP sessions {}",
            s(&x["id"]),
            s(&x["connector"]),
            s(&x["state"]),
            x["calls"],
            x["client_flows"],
            x["idle_ms"],
            x["idle_limit_ms"],
            x["protocol_session_ids"]
        );
    }

    step(8, "deny diagnostics: reason code, rule hit, developer note");
    if matches!(s(&p["decision"]), "deny" | "require_approval") {
        println!(
            "  reason {} · rule {} · note: {}",
            s(&p["reason_code"]),
            p["rule"].as_str().unwrap_or("(default)"),
            p["note"].as_str().unwrap_or("-")
        );
    } else {
        println!("  the receipt's call was allowed; refused calls around it: {denials}");
    }

    step(
        9,
        "preview the impact of revoking the rehearsal target (this instance only)",
    );
    let target_q = form_urlencoded::Serializer::new(String::new())
        .append_pair("instance", &format!("{agent}/{instance}"))
        .finish();
    let impact = match get(&config, &format!("/v1/impact?{target_q}")) {
        Ok(v) => v,
        Err(code) => return Ok((code, report)),
    };
    print_impact(&impact);
    report["impact"] = impact.clone();
    if dry_run {
        println!("\ndry run: stopped before the revocation; nothing changed");
        report["dry_run"] = json!(true);
        return Ok((ExitCode::SUCCESS, report));
    }

    step(
        10,
        "disable and revoke, with a recorded reason and an explicit confirmation",
    );
    let target = format!("{agent}/{instance}");
    if !yes && !super::revoke::confirm(&target) {
        eprintln!("not confirmed; the drill stops here and nothing changed");
        return Ok((ExitCode::from(super::exit::FAILURE), report));
    }
    let reason = format!("incident drill from receipt {}", receipt);
    let body = json!({ "instance": target, "reason": reason, "sudo_user": admin::sudo_user() });
    let rev = match admin::post(&config, "/v1/revocations", &body) {
        Ok(v) => v,
        Err(code) => return Ok((code, report)),
    };
    println!(
        "  revoked {target}: killed {} agent sockets and {} proxy legs in {} us; admin record {}",
        rev["kill"]["agent_sockets_destroyed"],
        rev["kill"]["proxy_legs_destroyed"],
        rev["kill"]["elapsed"],
        s(&rev["admin_record"])
    );
    report["revocation"] = rev.clone();

    step(
        11,
        "terminate client and backend sessions, in the kernel too, and check",
    );
    let socket = crate::control::socket_path(&config.paths.runtime_dir);
    match crate::control::client::post(&socket, "/v1/sessions/terminate", &body) {
        Ok(t) => println!(
            "  terminated {} more session(s)",
            t["terminated"].as_array().map_or(0, Vec::len)
        ),
        Err(_) => println!("  no live session left to terminate (the revocation ended them)"),
    }
    let after = get(&config, &format!("/v1/impact?{target_q}")).unwrap_or_default();
    let (sessions_left, agent_sockets, proxy_legs) = (
        after["sessions"].as_array().map_or(0, Vec::len),
        after["flows"]["agent_sockets"].as_u64().unwrap_or(0),
        after["flows"]["proxy_legs"].as_u64().unwrap_or(0),
    );
    let dead = sessions_left == 0 && agent_sockets == 0 && proxy_legs == 0;
    println!(
        "  now: {sessions_left} sessions, {agent_sockets} agent sockets, {proxy_legs} proxy legs -> {}",
        if dead { "its flows are dead" } else { "SOMETHING IS STILL LIVE" }
    );
    report["flows_dead"] = json!(dead);

    step(12, "the admin audit: who changed what, affected ids, when");
    let log_q = form_urlencoded::Serializer::new(String::new())
        .append_pair("target", &instance)
        .append_pair("limit", "10")
        .finish();
    let log = get(&config, &format!("/v1/admin-log?{log_q}")).unwrap_or_default();
    for x in log["records"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {} (uid {}) {} {} -> {} · affected {} · {}",
            s(&x["id"]),
            s(&x["time"]),
            s(&x["who"]["user"]),
            x["who"]["uid"],
            s(&x["action"]),
            s(&x["target"]),
            s(&x["result"]),
            x["affected"],
            s(&x["reason"])
        );
    }
    report["admin_records"] = json!(log["records"].as_array().map_or(0, Vec::len));

    println!("\n\x1b[1mReport\x1b[0m");
    println!(
        "  from {}: {agent}/{instance}, {} related receipts ({} refused); revoked and terminated; flows dead: {}; reinstate with `enforcer reinstate --instance {target} --reason ...`",
        receipt, report["related_receipts"], report["refused"], dead
    );
    let code = if dead {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::FAILURE)
    };
    Ok((code, report))
}
