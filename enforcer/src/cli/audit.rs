//! `enforcer audit`: search receipts, show one as the full ticket, verify the hash chain, and
//! replay a session's redacted recording. Asks the daemon; with the daemon stopped, reads the
//! store directly (and says so).

use std::process::ExitCode;

use serde_json::Value;

use super::{admin, exit};
use crate::{
    audit::{AuditStore, Durability},
    config::Config,
    control::queries::{self, Params},
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Find receipts (newest first). Filters are AND-ed.
    Search(Box<SearchArgs>),
    /// Show one receipt as the full ticket: request, actor chain, policy, credential,
    /// connector path, sessions, outcome and deny diagnostics.
    Show {
        receipt: String,
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain: every changed, removed, reordered or inserted record is named.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Replay a session's redacted recording in order (enforcer or MCP session id).
    Replay {
        session: String,
        #[arg(long)]
        json: bool,
    },
    /// Receipt appends per second (both durability modes) and search latency over a store of
    /// N synthetic receipts, in a temporary store.
    #[command(hide = true)]
    Bench {
        #[arg(long, default_value_t = 20000)]
        appends: usize,
        #[arg(long, default_value_t = 1_000_000)]
        receipts: usize,
        #[arg(long, default_value_t = 200)]
        reps: usize,
    },
}

#[derive(clap::Args)]
struct SearchArgs {
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    instance: Option<String>,
    /// Tool name (tools/call).
    #[arg(long)]
    tool: Option<String>,
    /// JSON-RPC method, e.g. tools/list.
    #[arg(long)]
    method: Option<String>,
    /// Enforcer session id.
    #[arg(long)]
    session: Option<String>,
    /// MCP session id (Mcp-Session-Id).
    #[arg(long)]
    protocol_session: Option<String>,
    /// ok, tool_error, rpc_error, denied, approval_required, dlp_blocked, refused,
    /// upstream_error, http_error, incomplete, tunnelled...
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long)]
    connector: Option<String>,
    /// RFC 3339 time, or a duration ago (15m, 2h, 1d).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Receipts per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after a previous page (its next_cursor).
    #[arg(long)]
    cursor: Option<String>,
    #[arg(long)]
    json: bool,
}

impl SearchArgs {
    fn params(&self) -> Params {
        let mut p = Params::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v.clone());
            }
        };
        put("user", &self.user);
        put("agent", &self.agent);
        put("instance", &self.instance);
        put("tool", &self.tool);
        put("method", &self.method);
        put("session", &self.session);
        put("protocol_session", &self.protocol_session);
        put("outcome", &self.outcome);
        put("connector", &self.connector);
        put("since", &self.since);
        put("until", &self.until);
        put("cursor", &self.cursor);
        p.insert("limit".into(), self.limit.to_string());
        p
    }
}

fn query_string(p: &Params) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    let mut keys: Vec<_> = p.keys().collect();
    keys.sort();
    for k in keys {
        s.append_pair(k, &p[k]);
    }
    s.finish()
}

/// Run against the daemon, or against the store when the daemon is not running.
fn ask(
    config: &Config,
    path: &str,
    offline: impl FnOnce(&AuditStore) -> Result<Value, queries::QueryError>,
) -> Result<Value, ExitCode> {
    admin::get_or_offline(config, path, |db| {
        let store = AuditStore::open(db, &config.receipts_dir(), Durability::Strict)
            .map_err(|e| queries::QueryError::Store(e.to_string()))?;
        offline(&store)
    })
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    Ok(match args.command {
        Command::Bench {
            appends,
            receipts,
            reps,
        } => {
            use crate::audit::bench;
            for durability in [
                Durability::Window(std::time::Duration::from_millis(200)),
                Durability::Strict,
            ] {
                println!("{}", bench::bench_append(appends, durability)?);
            }
            println!("{}", bench::bench_search(receipts, reps)?);
            ExitCode::SUCCESS
        }
        Command::Search(a) => {
            let p = a.params();
            let v = match ask(
                &config,
                &format!("/v1/receipts?{}", query_string(&p)),
                |s| queries::search(s, &p),
            ) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if a.json {
                println!("{v}");
            } else {
                print_table(&v);
            }
            ExitCode::SUCCESS
        }
        Command::Show { receipt, json } => {
            let v = match ask(&config, &format!("/v1/receipts/{receipt}"), |s| {
                queries::receipt(s, &receipt)
            }) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{}", v["receipt"]);
            } else {
                print_ticket(&v["receipt"]);
            }
            ExitCode::SUCCESS
        }
        Command::Verify { json } => {
            let v = match ask(&config, "/v1/audit/verify", queries::verify) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let ok = v["ok"].as_bool().unwrap_or(false);
            if json {
                println!("{v}");
            } else {
                let r = &v["report"];
                if ok {
                    println!(
                        "audit chain intact: {} receipts, head {} ({})",
                        r["checked"],
                        r["head_seq"],
                        r["head_hash"].as_str().unwrap_or("")
                    );
                } else {
                    println!(
                        "AUDIT CHAIN BROKEN: {} problem(s)",
                        r["problems"].as_array().map_or(0, Vec::len)
                    );
                    for p in r["problems"].as_array().into_iter().flatten() {
                        println!(
                            "  {:<10} seq {:<8} {:<14} {}",
                            p["kind"].as_str().unwrap_or(""),
                            p["seq"],
                            p["id"].as_str().unwrap_or(""),
                            p["detail"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::TAMPERED)
            }
        }
        Command::Replay { session, json } => {
            let v = match ask(&config, &format!("/v1/sessions/{session}/recording"), |s| {
                queries::replay(s, &session)
            }) {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if json {
                println!("{v}");
            } else {
                for r in v["receipts"].as_array().into_iter().flatten() {
                    println!(
                        "{} {}  {} {}  -> {}",
                        r["time"].as_str().unwrap_or(""),
                        r["id"].as_str().unwrap_or(""),
                        r["request"]["method"].as_str().unwrap_or("(connection)"),
                        r["request"]["target"].as_str().unwrap_or(""),
                        r["outcome"]["status"].as_str().unwrap_or("")
                    );
                    if let Some(a) = r["request"]["arguments_redacted"].as_object() {
                        println!("    arguments {}", Value::Object(a.clone()));
                    }
                    if !r["recording"].is_null() {
                        println!("    response  {}", r["recording"]);
                    }
                }
            }
            ExitCode::SUCCESS
        }
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn print_table(v: &Value) {
    println!(
        "{:<14} {:<27} {:<12} {:<12} {:<14} {:<20} {:<17} RULE",
        "RECEIPT", "TIME", "AGENT", "INSTANCE", "METHOD", "TARGET", "OUTCOME"
    );
    for r in v["receipts"].as_array().into_iter().flatten() {
        let method = if r["kind"] == "connection" {
            s(&r["event"]["event"])
        } else {
            s(&r["request"]["method"])
        };
        let target = if r["kind"] == "connection" {
            s(&r["event"]["destination"])
        } else {
            s(&r["request"]["target"])
        };
        println!(
            "{:<14} {:<27} {:<12} {:<12} {:<14} {:<20} {:<17} {}",
            s(&r["id"]),
            s(&r["time"]),
            s(&r["actor"]["agent"]),
            s(&r["actor"]["instance"]),
            method,
            target,
            s(&r["outcome"]["status"]),
            s(&r["policy"]["rule"]),
        );
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}

pub fn print_ticket(r: &Value) {
    let line = |label: &str, text: String| println!("{label:<12} {text}");
    println!(
        "Receipt {}   {}   {}",
        s(&r["id"]),
        s(&r["time"]),
        s(&r["kind"])
    );
    let req = &r["request"];
    if !req.is_null() {
        line(
            "Request",
            format!(
                "{} {}  (JSON-RPC id {}, HTTP {}, era {}, protocol {})",
                s(&req["method"]),
                s(&req["target"]),
                req["jsonrpc_id"],
                s(&req["http_method"]),
                s(&req["era"]),
                req["protocol_version"].as_str().unwrap_or("-")
            ),
        );
        if !req["arguments_redacted"].is_null() {
            line(
                "",
                format!(
                    "arguments {}  ({})",
                    req["arguments_redacted"],
                    s(&req["arguments_digest"])
                ),
            );
        }
    }
    if let Some(e) = r["event"].as_object() {
        line(
            "Event",
            format!(
                "{} to {} (SNI {})",
                s(&e["event"]),
                s(&e["destination"]),
                e["sni"].as_str().unwrap_or("-")
            ),
        );
    }
    let a = &r["actor"];
    line(
        "Actor",
        format!(
            "user {} (uid {}) > agent {} > instance {} (cgroup {}) > pid {}",
            s(&a["user"]),
            a["uid"],
            s(&a["agent"]),
            s(&a["instance"]),
            a["instance_id"],
            a["pid"]
        ),
    );
    line(
        "Surface",
        format!(
            "exe {} · client {} · user-agent {}",
            s(&a["surface"]["exe"]),
            a["surface"]["client"].as_str().unwrap_or("-"),
            a["surface"]["user_agent"].as_str().unwrap_or("-")
        ),
    );
    let p = &r["policy"];
    if !p.is_null() {
        line(
            "Policy",
            format!(
                "version {} ({}) · environment {} · decision {}{}",
                s(&p["version"]),
                s(&p["version_hash"]),
                s(&p["environment"]),
                s(&p["decision"]),
                p["shadow_decision"]
                    .as_str()
                    .map(|d| format!(" (shadow mode: would {d})"))
                    .unwrap_or_default()
            ),
        );
        line(
            "",
            format!(
                "rule {} · reason {}",
                p["rule"].as_str().unwrap_or("(default)"),
                s(&p["reason_code"])
            ),
        );
        if let Some(n) = p["note"].as_str() {
            line("", format!("note: {n}"));
        }
    }
    let c = &r["credential"];
    line(
        "Credential",
        format!(
            "mode {} · binding {}",
            s(&c["mode"]),
            c["binding"].as_str().unwrap_or("-")
        ),
    );
    let k = &r["connector"];
    if !s(&k["connector"]).is_empty() {
        line(
            "Connector",
            format!(
                "{} · route {} · backend {} · route {}{}{}",
                s(&k["connector"]),
                s(&k["route"]),
                s(&k["backend"]),
                s(&k["route_status"]["state"]),
                k["route_status"]["last_latency_us"]
                    .as_u64()
                    .map(|u| format!(" (last connect {:.1} ms)", u as f64 / 1000.0))
                    .unwrap_or_default(),
                k["route_status"]["last_error"]
                    .as_str()
                    .map(|e| format!(" last error: {e}"))
                    .unwrap_or_default()
            ),
        );
    }
    let se = &r["session"];
    if !s(&se["enforcer_session"]).is_empty() {
        line(
            "Session",
            format!(
                "{} ({} at the time, idle limit {} s) · protocol session {}",
                s(&se["enforcer_session"]),
                s(&se["state"]),
                se["idle_limit_ms"].as_u64().unwrap_or(0) / 1000,
                se["protocol_session_id"].as_str().unwrap_or("-")
            ),
        );
        line(
            "",
            format!(
                "client flow {} · backend flow {}",
                s(&se["client_flow"]),
                se["backend_flow"].as_str().unwrap_or("-")
            ),
        );
    }
    let o = &r["outcome"];
    let masking: Vec<String> = o["masking"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    line(
        "Outcome",
        format!(
            "{}{}{} · {:.1} ms · {} B in / {} B out{}",
            s(&o["status"]),
            o["http_status"]
                .as_u64()
                .map(|h| format!(" · HTTP {h}"))
                .unwrap_or_default(),
            o["rpc_error_code"]
                .as_i64()
                .map(|c| format!(" · JSON-RPC {c}"))
                .unwrap_or_default(),
            o["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            o["bytes_in"],
            o["bytes_out"],
            if masking.is_empty() {
                String::new()
            } else {
                format!(" · masked {}", masking.join(" "))
            }
        ),
    );
    if let Some(e) = o["error"].as_str() {
        line("", format!("error: {e}"));
    }
}
