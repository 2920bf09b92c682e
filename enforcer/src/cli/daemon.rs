use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Remove every pinned program, link and map, then exit. Agents are unenforced afterwards.
    #[arg(long)]
    cleanup: bool,
}

pub fn run(config: Config, path: std::path::PathBuf, args: Args) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        crate::kernel::cleanup(&config.paths.pin_dir)?;
        println!(
            "removed pinned enforcement state in {}",
            config.paths.pin_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::daemon::run(config, path)?;
    Ok(ExitCode::SUCCESS)
}
