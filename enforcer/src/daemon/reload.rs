//! Reload (SIGHUP, `systemctl reload`): read the configuration file again and apply what can
//! change under live flows — a new policy version from the policy file, rotated secret
//! files — without dropping a connection. A file that does not parse, or a policy that does
//! not compile, is refused as a whole: what is in force stays in force, and the reason is
//! logged. Sections that only take effect at a restart are named in the log.

use std::path::Path;

use tracing::{info, warn};

use crate::{config::Config, control::Control};

/// Sections the running daemon cannot swap under live flows.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = |a: String, b: String| a != b;
    let mut changed = Vec::new();
    for (name, a, b) in [
        (
            "paths",
            format!("{:?}", old.paths),
            format!("{:?}", new.paths),
        ),
        (
            "agents",
            format!("{:?}", old.agents),
            format!("{:?}", new.agents),
        ),
        (
            "proxy",
            format!("{:?}", old.proxy),
            format!("{:?}", new.proxy),
        ),
        (
            "network",
            format!("{:?}", old.network),
            format!("{:?}", new.network),
        ),
        (
            "connectors",
            format!("{:?}", old.connectors),
            format!("{:?}", new.connectors),
        ),
        (
            "bindings",
            format!("{:?}", old.bindings),
            format!("{:?}", new.bindings),
        ),
        ("dlp", format!("{:?}", old.dlp), format!("{:?}", new.dlp)),
        (
            "audit",
            format!("{:?}", old.audit),
            format!("{:?}", new.audit),
        ),
        (
            "metrics",
            format!("{:?}", old.metrics),
            format!("{:?}", new.metrics),
        ),
        (
            "export",
            format!("{:?}", old.export),
            format!("{:?}", new.export),
        ),
        (
            "policy.mode/environment/defaults",
            format!(
                "{:?}{:?}{:?}{:?}",
                old.policy.mode,
                old.policy.environment,
                old.policy.defaults,
                old.policy.default_other
            ),
            format!(
                "{:?}{:?}{:?}{:?}",
                new.policy.mode,
                new.policy.environment,
                new.policy.defaults,
                new.policy.default_other
            ),
        ),
    ] {
        if differs(a, b) {
            changed.push(name);
        }
    }
    changed
}

/// Apply the file at `path`; Ok(status line) or Err(why it was refused).
pub fn reload(path: &Path, running: &Config, control: &Control) -> Result<String, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    // Compile first: a policy that does not compile refuses the reload before anything moves.
    if let Some(file) = &new.policy.file {
        let source = std::fs::read_to_string(file)
            .map_err(|e| format!("policy file {}: {e}", file.display()))?;
        crate::policy::Policy::compile_with(
            &source,
            &file.display().to_string(),
            &super::compile_options(running),
        )
        .map_err(|e| format!("the policy file does not compile:\n{e}"))?;
    }
    super::activate_policy(&new, &control.versions, &control.gate).map_err(|e| e.to_string())?;
    let unreadable = control.proxy.credentials.preload();
    for (binding, e) in &unreadable {
        warn!(%binding, error = %e, "after reload: a bound secret cannot be read");
    }
    let later = restart_only(running, &new);
    if !later.is_empty() {
        warn!(sections = ?later, "changed in the file; these take effect at the next restart");
    }
    let version = control
        .gate
        .active()
        .map(|a| a.meta.id.clone())
        .unwrap_or_else(|| "none".into());
    info!(policy_version = %version, restart_needed = ?later, "configuration reloaded");
    Ok(format!(
        "enforcing; policy {version}{}",
        if later.is_empty() {
            String::new()
        } else {
            format!("; restart to apply {}", later.join(", "))
        }
    ))
}
