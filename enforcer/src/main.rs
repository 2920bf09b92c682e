//! `enforcer`: the daemon and the admin CLI in one binary. This file only dispatches.

mod audit;
mod cgroups;
mod cli;
mod config;
mod connectors;
mod control;
mod credentials;
mod daemon;
mod dlp;
mod export;
mod gate;
mod identity;
mod jsonview;
mod kernel;
mod mcp;
mod metrics;
mod policy;
mod proxy;
mod rehearsal;
mod revocation;
mod sessions;
mod store;
mod text;
mod tls;

/// The proxy allocates per request (headers, bodies, JSON); mimalloc (v2, see the workspace
/// manifest) takes half the CPU the system allocator does for that pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
