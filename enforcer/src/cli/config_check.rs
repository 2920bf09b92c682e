//! `enforcer config check [FILE]`: everything the daemon would refuse at start (or on
//! reload), found without touching the kernel: TOML syntax and unknown keys, invalid values,
//! connectors, credential bindings and their secrets, detectors, the policy file, export
//! sinks. Each problem names the file and line and what to change.

use std::{path::PathBuf, process::ExitCode};

use super::exit;
use crate::{
    config::{Config, ConfigError},
    connectors::Connectors,
    credentials::CredentialStore,
    dlp::Dlp,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check a configuration file (default: the one --config names).
    Check {
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// The 1-based line where `dotted` ("section.key") is set, if the file spells it out.
fn locate(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            current = h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == dotted {
                return Some(i + 1);
            }
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim();
        if current == section && k == key {
            return Some(i + 1);
        }
    }
    None
}

pub fn run(config_path: PathBuf, args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Check { file, json } = args.command;
    let path = file.unwrap_or(config_path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", path.display());
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let config = match Config::parse(&text, &path) {
        Ok(c) => Some(c),
        Err(ConfigError::Parse { message, .. }) => {
            // toml's message carries the line, column and the offending text.
            problems.push(format!("{}: {message}", path.display()));
            None
        }
        Err(ConfigError::Invalid { field, message, .. }) => {
            let at = locate(&text, field)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            problems.push(format!("{}{at}: {field}: {message}", path.display()));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Some(c) = &config {
        let at = |field: &str| {
            locate(&text, field)
                .map(|l| format!("{}:{l}", path.display()))
                .unwrap_or_else(|| path.display().to_string())
        };
        match Connectors::build(&c.connectors) {
            Ok(connectors) => {
                let ids: Vec<&str> = connectors.all().iter().map(|c| c.id.as_str()).collect();
                match CredentialStore::new(&c.credentials.dir, c.bindings.clone(), &ids) {
                    Ok(store) => {
                        for (binding, e) in store.preload() {
                            warnings.push(format!(
                                "{}: binding {binding}: {e} (calls through it will be refused)",
                                at("bindings")
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("{}: {e}", at("bindings"))),
                }
            }
            Err(e) => problems.push(format!("{}: {e}", at("connectors"))),
        }
        if let Err(e) = Dlp::new(&c.dlp) {
            problems.push(format!("{}: {e}", at("dlp")));
        }
        if let Some(policy) = &c.policy.file {
            match std::fs::read_to_string(policy) {
                Ok(src) => {
                    let options = crate::daemon::compile_options(c);
                    if let Err(e) = crate::policy::Policy::compile_with(
                        &src,
                        &policy.display().to_string(),
                        &options,
                    ) {
                        problems.push(format!(
                            "{}: policy.file does not compile:\n{e}",
                            at("policy.file")
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "{}: policy.file {}: {e}",
                    at("policy.file"),
                    policy.display()
                )),
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "file": path, "ok": problems.is_empty(), "problems": problems, "warnings": warnings })
        );
    } else {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        for p in &problems {
            eprintln!("error: {p}");
        }
        if problems.is_empty() {
            let c = config.as_ref().expect("parsed when there are no problems");
            println!(
                "{}: ok ({} connectors, {} bindings, policy {}, metrics {}, {} export sinks)",
                path.display(),
                c.connectors.len(),
                c.bindings.len(),
                c.policy
                    .file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "from the store".into()),
                if c.metrics.enabled {
                    c.metrics.listen.to_string()
                } else {
                    "off".into()
                },
                c.export.jsonl.len() + c.export.syslog.len() + c.export.webhook.len(),
            );
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::USAGE)
    })
}

#[cfg(test)]
mod tests {
    use super::locate;

    #[test]
    fn finds_the_line_a_key_is_set_on() {
        let text =
            "# c\n[paths]\nstate_dir = \"/x\"\n\n[proxy]\nport = 0\n[[connectors]]\nid = \"a\"\n";
        assert_eq!(locate(text, "proxy.port"), Some(6));
        assert_eq!(locate(text, "paths.state_dir"), Some(3));
        assert_eq!(locate(text, "connectors"), Some(7));
        assert_eq!(locate(text, "proxy.listen_v4"), None);
    }
}
