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

pub fn sessions(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let v = match admin::get(&config, "/v1/sessions") {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
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
    let v = match admin::get(&config, "/v1/connectors") {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
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
