//! `enforcer ca`: where the local CA certificate is, and its PEM (never the key).

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{config::Config, tls::LocalCa};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON: {"certificate": path, "bundle": path, "pem": "..."}.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let ca = LocalCa::load_or_create(&config.ca_dir()).context("the local CA")?;
    let pem = std::fs::read_to_string(ca.cert_path())?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "certificate": ca.cert_path(), "bundle": ca.bundle_path(), "pem": pem })
        );
    } else {
        println!("# certificate: {}", ca.cert_path().display());
        println!(
            "# agent trust bundle (this CA + system roots): {}",
            ca.bundle_path().display()
        );
        print!("{pem}");
    }
    Ok(ExitCode::SUCCESS)
}
