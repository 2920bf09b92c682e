//! `enforcer`: the daemon and the admin CLI in one binary. This file only dispatches.

mod cgroups;
mod cli;
mod config;
mod connectors;
mod control;
mod credentials;
mod daemon;
mod identity;
mod kernel;
mod mcp;
mod proxy;
mod revocation;
mod sessions;
mod tls;

fn main() -> std::process::ExitCode {
    cli::run()
}
