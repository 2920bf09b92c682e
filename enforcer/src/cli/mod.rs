//! Command-line interface: one file per command. Errors are printed as one clear line (with
//! causes), never a backtrace, and map to meaningful exit codes.

mod admin;
mod adminlog;
mod audit;
mod ca;
mod config_check;
mod daemon;
mod drill;
mod exec;
mod policy;
mod revoke;
mod sessions;
mod status;
mod top;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "enforcer",
    version,
    about = "Host-level enforcer for Model Context Protocol traffic"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "ENFORCER_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the local CA's certificate path and PEM, for agents' trust stores.
    Ca(ca::Args),
    /// Check a configuration file: syntax, unknown keys, values, connectors, bindings and
    /// their secrets, detectors, the policy file (file:line and what to change).
    Config(config_check::Args),
    /// Run the daemon: attach (or adopt) the kernel programs and serve the proxy.
    Daemon(daemon::Args),
    /// Start a command as an agent instance, in its own cgroup under the agents root.
    Exec(exec::Args),
    /// Revoke an agent, instance, user, credential binding or connector: show the impact,
    /// confirm, refuse new connects, end its sessions (in-flight calls get an error) and kill
    /// its live sockets on both legs (recorded in the admin log).
    Revoke(revoke::RevokeArgs),
    /// Lift a revocation.
    Reinstate(revoke::ReinstateArgs),
    /// Disable an agent: every instance, now and started later, is refused (a revocation
    /// recorded as a disable). Shows the impact and asks for confirmation like revoke.
    Disable(revoke::DisableArgs),
    /// Enable a disabled agent again (recorded).
    Enable(revoke::EnableArgs),
    /// List live enforcer sessions (agent instance x connector) from the daemon.
    Sessions(sessions::SessionsArgs),
    /// List connectors with their route status from the daemon.
    Connectors(sessions::Args),
    /// List agents and their instances: cgroups, revocations, processes, live sessions.
    Agents(sessions::Args),
    /// List credential bindings: reference, connector, scope, mode, and whether the secret is
    /// usable (never its value).
    Bindings(sessions::Args),
    /// Show the kernel state: settings, map entries, counters, revocations.
    Status(status::Args),
    /// Live per-tool figures: calls, rates, latency percentiles, errors, denials, DLP blocks,
    /// bytes, sessions, kernel counters (what the Prometheus endpoint exports).
    Top(top::Args),
    /// SIEM export sinks: cursor, backlog, deliveries, failures, alarms.
    Exports(sessions::Args),
    /// Check, test, load and inspect policy versions.
    Policy(policy::Args),
    /// Search and show receipts, verify the audit chain, replay a session.
    Audit(audit::Args),
    /// What revoking an agent, instance, user, binding or connector (or terminating a
    /// session) would touch: sessions, agents, instances, bindings, connectors, live flows per
    /// leg. Changes nothing.
    Impact(adminlog::ImpactArgs),
    /// Every admin action: who, what, target, affected ids, reason, result (hash-chained).
    AdminLog(adminlog::LogArgs),
    /// The incident drill from one receipt: evidence, preview, revocation and termination of
    /// the receipt's agent instance, a check that its flows are dead, and a report.
    Drill(drill::Args),
    /// The rehearsal's agent (run by `drill --simulate` inside an agent cgroup).
    #[command(hide = true)]
    RehearsalAgent(RehearsalAgentArgs),
}

#[derive(clap::Args)]
struct RehearsalAgentArgs {
    /// The rehearsal MCP server's URL (plain http).
    #[arg(long)]
    url: String,
}

/// Exit codes the CLI uses.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REFUSED: u8 = 3;
    /// `audit verify` found tampering; `policy test` had failing cases.
    pub const TAMPERED: u8 = 4;
    pub const TEST_FAILED: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // `config check` reports a bad file itself, with lines; every other command needs a good one.
    let command = match cli.command {
        Command::Config(args) => {
            return match config_check::run(cli.config, args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("enforcer: {}", error_chain(&e));
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
        other => other,
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("enforcer: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let result = match command {
        Command::Ca(args) => ca::run(config, args),
        Command::Config(_) => unreachable!("handled before the config is loaded"),
        Command::Daemon(args) => daemon::run(config, cli.config.clone(), args),
        Command::Exec(args) => exec::run(config, args),
        Command::Revoke(args) => revoke::run(config, args),
        Command::Reinstate(args) => revoke::reinstate(config, args),
        Command::Disable(args) => revoke::disable(config, args),
        Command::Enable(args) => revoke::enable(config, args),
        Command::Status(args) => status::run(config, args),
        Command::Top(args) => top::run(config, args),
        Command::Exports(args) => sessions::exports(config, args),
        Command::Sessions(args) => sessions::sessions_command(config, args),
        Command::Connectors(args) => sessions::connectors(config, args),
        Command::Agents(args) => sessions::agents(config, args),
        Command::Bindings(args) => sessions::bindings(config, args),
        Command::Policy(args) => policy::run(config, args),
        Command::Audit(args) => audit::run(config, args),
        Command::Impact(args) => adminlog::impact(config, args),
        Command::AdminLog(args) => adminlog::log(config, args),
        Command::Drill(args) => drill::run(config, args),
        Command::RehearsalAgent(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(crate::rehearsal::agent::run(&args.url)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enforcer: {}", error_chain(&e));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Who is running this command, for records: uid, user name, and the sudo user if any.
pub fn invoker() -> (u32, String) {
    let uid = nix::unistd::getuid().as_raw();
    let mut name = crate::identity::user_name(uid);
    if let Ok(sudo) = std::env::var("SUDO_USER") {
        name = format!("{name} (sudo from {sudo})");
    }
    (uid, name)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// One line with each cause once (our error types often embed their source already).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
