//! `enforcer impact` (what a revocation would touch) and `enforcer admin-log` (every mutating
//! action, hash-chained).

use std::process::ExitCode;

use super::{
    admin,
    revoke::{impact_query, print_impact, TargetArgs},
};
use crate::{
    config::Config,
    control::{admin_log::AdminLog, queries::QueryError},
};

#[derive(clap::Args)]
pub struct ImpactArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct LogArgs {
    /// Only this action (revoke, reinstate, policy_load, policy_activate).
    #[arg(long)]
    action: Option<String>,
    /// Only targets containing this text.
    #[arg(long)]
    target: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Check the hash chain instead of listing.
    #[arg(long)]
    verify: bool,
    #[arg(long)]
    json: bool,
}

pub fn impact(config: Config, args: ImpactArgs) -> anyhow::Result<ExitCode> {
    let v = match admin::get(&config, &impact_query(&args.target)) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.json {
        println!("{v}");
    } else {
        print_impact(&v);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(config: Config, args: LogArgs) -> anyhow::Result<ExitCode> {
    let open = |db: &sled::Db| AdminLog::open(db).map_err(|e| QueryError::Store(e.to_string()));
    if args.verify {
        let v = match admin::get_or_offline(&config, "/v1/admin-log/verify", |db| {
            let r = open(db)?
                .verify()
                .map_err(|e| QueryError::Store(e.to_string()))?;
            Ok(serde_json::json!({ "ok": r.is_ok(), "report": r }))
        }) {
            Ok(v) => v,
            Err(code) => return Ok(code),
        };
        println!("{v}");
        return Ok(if v["ok"] == true {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::exit::TAMPERED)
        });
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("limit", &args.limit.to_string());
    if let Some(a) = &args.action {
        q.append_pair("action", a);
    }
    if let Some(t) = &args.target {
        q.append_pair("target", t);
    }
    let (action, target, limit) = (args.action.clone(), args.target.clone(), args.limit);
    let v = match admin::get_or_offline(&config, &format!("/v1/admin-log?{}", q.finish()), |db| {
        let records = open(db)?
            .list(action.as_deref(), target.as_deref(), limit)
            .map_err(|e| QueryError::Store(e.to_string()))?;
        Ok(serde_json::json!({ "records": records }))
    }) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<11} {:<21} {:<28} {:<16} {:<40} {:<8} {:<11} REASON",
        "RECORD", "TIME", "WHO", "ACTION", "TARGET", "RESULT", "MODE"
    );
    for r in v["records"].as_array().into_iter().flatten() {
        let who = match r["who"]["sudo_user"].as_str() {
            Some(s) => format!(
                "{} (uid {}, sudo {s})",
                r["who"]["user"].as_str().unwrap_or(""),
                r["who"]["uid"]
            ),
            None => format!(
                "{} (uid {})",
                r["who"]["user"].as_str().unwrap_or(""),
                r["who"]["uid"]
            ),
        };
        println!(
            "{:<11} {:<21} {:<28} {:<16} {:<40} {:<8} {:<11} {}",
            r["id"].as_str().unwrap_or(""),
            r["time"].as_str().unwrap_or(""),
            who,
            r["action"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or(""),
            r["result"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
