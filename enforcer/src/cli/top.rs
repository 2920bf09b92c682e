//! `enforcer top`: live per-tool figures from the daemon (the same registry Prometheus
//! scrapes): calls and rate, latency percentiles, error and denial rates, DLP blocks, bytes,
//! live sessions, kernel counters. `--once` prints one table; `--json` one snapshot.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use super::admin;
use crate::{config::Config, metrics::Snapshot};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print one table and exit (rates need two samples: taken `--interval` apart).
    #[arg(long)]
    once: bool,
    /// Print one snapshot as JSON and exit.
    #[arg(long)]
    json: bool,
}

fn fetch(config: &Config) -> Result<Snapshot, ExitCode> {
    let v = admin::get(config, "/v1/metrics")?;
    serde_json::from_value(v).map_err(|e| {
        eprintln!("enforcer: unexpected metrics snapshot from the daemon: {e}");
        ExitCode::from(super::exit::FAILURE)
    })
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    if args.json {
        return Ok(match admin::get(&config, "/v1/metrics") {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        });
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let mut previous = match fetch(&config) {
        Ok(s) => (s, Instant::now()),
        Err(code) => return Ok(code),
    };
    loop {
        std::thread::sleep(interval);
        let now = match fetch(&config) {
            Ok(s) => s,
            Err(code) => return Ok(code),
        };
        let table = crate::metrics::render_top(&now, Some(&previous.0), previous.1.elapsed());
        if args.once {
            print!("{table}");
            return Ok(ExitCode::SUCCESS);
        }
        // Clear the screen and home the cursor, then the table.
        print!("\x1b[2J\x1b[H{table}");
        previous = (now, Instant::now());
    }
}
