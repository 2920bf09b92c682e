//! `enforcer`: the daemon and the admin CLI in one binary. This file only dispatches.

mod cgroups;
mod cli;
mod config;
mod daemon;
mod identity;
mod kernel;
mod proxy;
mod revocation;

fn main() -> std::process::ExitCode {
    cli::run()
}
