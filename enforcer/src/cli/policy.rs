//! `enforcer policy`: check and test policy files offline, load them as new versions into the
//! running daemon, and read the version history (from the store when the daemon is stopped).

use std::{path::PathBuf, process::ExitCode};

use serde_json::{json, Value};

use super::{admin, exit};
use crate::{
    config::Config,
    control::queries,
    policy::{self, PolicyVersions},
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Validate a Cedar policy file: errors and warnings with file:line:column.
    Check { file: PathBuf },
    /// Run decision cases (a TOML file naming its policy) as a dry run; exit 4 on a failure.
    Test {
        cases: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Load a policy file into the daemon as a new version and put it in force.
    Load {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put an earlier version back in force (rollback).
    Activate {
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// The versions, newest first, with who loaded each and when.
    History {
        #[arg(long)]
        json: bool,
    },
    /// A version's metadata and text ("active" for the one in force).
    Show {
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed between two versions: rules added, removed, changed, and a unified diff.
    Diff {
        from: String,
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Policy evaluation latency with N generated rules (p50/p99).
    #[command(hide = true)]
    Bench {
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        #[arg(long, default_value_t = 20000)]
        iterations: usize,
    },
}

fn versions(db: &sled::Db) -> Result<PolicyVersions, queries::QueryError> {
    PolicyVersions::open(db).map_err(|e| queries::QueryError::Store(e.to_string()))
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let options = crate::daemon::compile_options(&config);
    Ok(match args.command {
        Command::Check { file } => {
            let source = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            match policy::Policy::compile_with(&source, &file.display().to_string(), &options) {
                Ok(p) => {
                    for w in p.warnings() {
                        println!("{w}");
                    }
                    println!(
                        "{}: ok, {} rules, {} ({} warning(s))",
                        file.display(),
                        p.rules().len(),
                        p.hash(),
                        p.warnings().len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
        Command::Test { cases, json } => {
            let report = policy::run_cases(&cases)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cases.display()))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            if report.all_passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::TEST_FAILED)
            }
        }
        Command::Load { file, json } => {
            let source = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            // Found here first: the same errors the daemon would give, without a round trip.
            if let Err(errors) =
                policy::Policy::compile_with(&source, &file.display().to_string(), &options)
            {
                eprintln!("{errors}");
                eprintln!("policy refused; the active version stays in force");
                return Ok(ExitCode::from(exit::FAILURE));
            }
            let body = json!({
                "source": source,
                "file_name": file.display().to_string(),
                "sudo_user": admin::sudo_user(),
            });
            let v = match admin::post(&config, "/v1/policy", &body) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                for w in v["warnings"].as_array().into_iter().flatten() {
                    println!("{}", w.as_str().unwrap_or(""));
                }
                let m = &v["version"];
                println!(
                    "loaded {} as {} ({} rules, {}){} — now in force",
                    file.display(),
                    m["id"].as_str().unwrap_or(""),
                    m["rules"],
                    m["hash"].as_str().unwrap_or(""),
                    m["same_as"]
                        .as_str()
                        .map(|s| format!(", same text as {s}"))
                        .unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Command::Activate { version, json } => {
            let body = json!({ "version": version, "sudo_user": admin::sudo_user() });
            let v = match admin::post(&config, "/v1/policy/activate", &body) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                println!(
                    "{} is in force again",
                    v["version"]["id"].as_str().unwrap_or("")
                );
            }
            ExitCode::SUCCESS
        }
        Command::History { json } => {
            let v = match admin::get_or_offline(&config, "/v1/policy/versions", |db| {
                queries::policy_history(&versions(db)?)
            }) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                print_history(&v);
            }
            ExitCode::SUCCESS
        }
        Command::Show { version, json } => {
            let v = match admin::get_or_offline(
                &config,
                &format!("/v1/policy/versions/{version}"),
                |db| queries::policy_version(&versions(db)?, &version),
            ) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                let m = &v["version"];
                println!(
                    "# {} · {} · {} rules · loaded {} by {} from {}",
                    m["id"].as_str().unwrap_or(""),
                    m["hash"].as_str().unwrap_or(""),
                    m["rules"],
                    m["loaded_at"].as_str().unwrap_or(""),
                    m["loaded_by"].as_str().unwrap_or(""),
                    m["file_name"].as_str().unwrap_or("")
                );
                print!("{}", v["source"].as_str().unwrap_or(""));
            }
            ExitCode::SUCCESS
        }
        Command::Diff { from, to, json } => {
            let path = format!(
                "/v1/policy/diff?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("from", &from)
                    .append_pair("to", &to)
                    .finish()
            );
            let v = match admin::get_or_offline(&config, &path, |db| {
                queries::policy_diff(&versions(db)?, &from, &to)
            }) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                let d = &v["diff"];
                let list = |k: &str| -> String {
                    let ids: Vec<&str> = d[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    if ids.is_empty() {
                        "-".into()
                    } else {
                        ids.join(", ")
                    }
                };
                println!("rules added:   {}", list("rules_added"));
                println!("rules removed: {}", list("rules_removed"));
                println!("rules changed: {}", list("rules_changed"));
                print!("{}", d["unified"].as_str().unwrap_or(""));
            }
            ExitCode::SUCCESS
        }
        Command::Bench { rules, iterations } => {
            println!("{}", policy::bench(rules, iterations));
            ExitCode::SUCCESS
        }
    })
}

fn print_history(v: &Value) {
    let active = v["active"].as_str().unwrap_or("");
    println!(
        "{:<3}{:<8} {:<22} {:<6} {:<28} {:<30} FILE",
        "", "VERSION", "LOADED", "RULES", "HASH", "LOADED BY"
    );
    for m in v["versions"].as_array().into_iter().flatten() {
        let id = m["id"].as_str().unwrap_or("");
        let hash = m["hash"].as_str().unwrap_or("");
        println!(
            "{:<3}{:<8} {:<22} {:<6} {:<28} {:<30} {}{}",
            if id == active { "*" } else { "" },
            id,
            m["loaded_at"].as_str().unwrap_or(""),
            m["rules"].to_string(),
            hash.get(..27).unwrap_or(hash),
            m["loaded_by"].as_str().unwrap_or(""),
            m["file_name"].as_str().unwrap_or(""),
            m["same_as"]
                .as_str()
                .map(|s| format!(" (same as {s})"))
                .unwrap_or_default()
        );
    }
}
