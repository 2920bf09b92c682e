//! Decision test cases (`enforcer policy test FILE`).
//!
//! ```toml
//! policy = "policy.cedar"          # relative to this file
//! environment = "prod"             # default "prod"
//! # detectors = ["aws_access_key"] # default: DEFAULT_DETECTORS
//!
//! [[case]]
//! name = "billing bot may list invoices"
//! agent = "billing-bot"
//! instance = "i1"                  # default "default"
//! user = "alice"                   # default "unknown"
//! surface = { exe = "/usr/bin/claude", client = "claude-code" }  # optional
//! connector = "stripe"
//! method = "tools/call"            # default
//! tool = "list_invoices"           # or target = "..." (uri, prompt name)
//! arguments = { limit = 10 }
//! dlp = { aws_access_key = 1 }     # optional
//! time = "2024-05-06T13:45:00Z"    # optional, default now
//! expect = "allow"                 # allow | deny | require_approval
//! expect_rule = "billing-tools"    # optional
//! expect_reason = "policy_permit"  # optional
//! ```

use super::compile::{CompileOptions, Policy};
use super::decide::{Decision, Defaults, Effect};
use super::error::Error;
use super::request::{CallRequest, CallTemplate, Surface};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    policy: String,
    #[serde(default = "prod")]
    environment: String,
    detectors: Option<Vec<String>>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

fn prod() -> String {
    "prod".into()
}

#[derive(Debug, Default, Deserialize)]
struct SurfaceSpec {
    #[serde(default)]
    exe: String,
    #[serde(default)]
    client: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    agent: String,
    #[serde(default = "default_instance")]
    instance: String,
    #[serde(default = "unknown")]
    user: String,
    #[serde(default)]
    surface: SurfaceSpec,
    #[serde(default = "unknown")]
    connector: String,
    #[serde(default = "tools_call")]
    method: String,
    tool: Option<String>,
    target: Option<String>,
    #[serde(default)]
    arguments: toml::Table,
    #[serde(default)]
    dlp: BTreeMap<String, u64>,
    time: Option<String>,
    environment: Option<String>,
    expect: String,
    expect_rule: Option<String>,
    expect_reason: Option<String>,
}

fn default_instance() -> String {
    "default".into()
}
fn unknown() -> String {
    "unknown".into()
}
fn tools_call() -> String {
    "tools/call".into()
}

/// Result of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub expected: String,
    pub actual: Decision,
    /// Why it failed (empty when passed).
    pub failures: Vec<String>,
}

/// Result of a case file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseReport {
    pub file: String,
    pub policy_hash: String,
    pub results: Vec<CaseResult>,
}

impl CaseReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
    pub fn all_passed(&self) -> bool {
        self.failed() == 0
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (policy {})", self.file, self.policy_hash)?;
        for r in &self.results {
            let d = &r.actual;
            let rule = d.rule.as_deref().unwrap_or("-");
            writeln!(
                f,
                "  {} {}  => {} (rule {rule}, reason {})",
                if r.passed { "PASS" } else { "FAIL" },
                r.name,
                d.effect,
                d.reason_code
            )?;
            for why in &r.failures {
                writeln!(f, "       {why}")?;
            }
            for e in &d.errors {
                writeln!(f, "       evaluation error: {e}")?;
            }
        }
        write!(
            f,
            "{} passed, {} failed, {} total",
            self.passed(),
            self.failed(),
            self.results.len()
        )
    }
}

fn case_err(path: &Path, message: impl Into<String>) -> Error {
    Error::CaseFile {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Run a case file against the policy it names, with product defaults.
pub fn run_cases(path: &Path) -> Result<CaseReport, Error> {
    run_cases_with(path, &Defaults::product())
}

/// Run a case file with the given defaults.
pub fn run_cases_with(path: &Path, defaults: &Defaults) -> Result<CaseReport, Error> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            path: p.display().to_string(),
            source,
        }
    };
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let file: CaseFile = toml::from_str(&text).map_err(|e| case_err(path, e.to_string()))?;
    let policy_path = path.parent().unwrap_or(Path::new(".")).join(&file.policy);
    let source = std::fs::read_to_string(&policy_path).map_err(io(&policy_path))?;
    let mut opts = CompileOptions::default();
    if let Some(d) = &file.detectors {
        opts.detectors = d.clone();
    }
    let policy = Policy::compile_with(&source, &policy_path.display().to_string(), &opts)?;
    let mut results = Vec::new();
    for c in &file.cases {
        let expect: Effect = c
            .expect
            .parse()
            .map_err(|e| case_err(path, format!("case {:?}: {e}", c.name)))?;
        let now = match &c.time {
            Some(t) => humantime::parse_rfc3339_weak(t)
                .map_err(|e| case_err(path, format!("case {:?}: time {t:?}: {e}", c.name)))?,
            None => SystemTime::now(),
        };
        let args = serde_json::to_value(&c.arguments)
            .map_err(|e| case_err(path, format!("case {:?}: arguments: {e}", c.name)))?;
        let target = c.tool.as_deref().or(c.target.as_deref()).unwrap_or("");
        let req = CallRequest {
            call: CallTemplate {
                user: &c.user,
                agent: &c.agent,
                instance: &c.instance,
                surface: Surface {
                    exe: &c.surface.exe,
                    client: &c.surface.client,
                },
                connector: &c.connector,
                method: &c.method,
                target,
                environment: c.environment.as_deref().unwrap_or(&file.environment),
            },
            arguments: &args,
            dlp: &c.dlp,
            now,
        };
        let d = policy.decide(&req, defaults);
        let mut failures = Vec::new();
        if d.effect != expect {
            failures.push(format!("expected {expect}, got {}", d.effect));
        }
        if let Some(r) = &c.expect_rule {
            if d.rule.as_deref() != Some(r.as_str()) {
                failures.push(format!(
                    "expected rule {r}, got {}",
                    d.rule.as_deref().unwrap_or("none (default)")
                ));
            }
        }
        if let Some(r) = &c.expect_reason {
            if &d.reason_code != r {
                failures.push(format!("expected reason {r}, got {}", d.reason_code));
            }
        }
        results.push(CaseResult {
            name: c.name.clone(),
            passed: failures.is_empty(),
            expected: c.expect.clone(),
            actual: d,
            failures,
        });
    }
    Ok(CaseReport {
        file: path.display().to_string(),
        policy_hash: policy.hash().to_string(),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::super::decide::tests::POLICY;
    use super::*;

    #[test]
    fn passing_and_failing_cases() {
        let dir = std::env::temp_dir().join(format!("policy-cases-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("p")).unwrap();
        std::fs::write(dir.join("p/main.cedar"), POLICY).unwrap();
        let cases = r#"
policy = "p/main.cedar"

[[case]]
name = "etc is blocked"
agent = "billing-bot"
connector = "stripe"
tool = "read_config"
arguments = { path = "/etc/shadow", opts = { deep = true }, tags = ["a", "b"] }
expect = "deny"
expect_rule = "no-etc"
expect_reason = "sensitive_path"

[[case]]
name = "night bot at night (wrong expectation)"
agent = "night-bot"
tool = "backup"
time = "2024-05-06T22:00:00Z"
expect = "allow"

[[case]]
name = "secrets"
agent = "billing-bot"
connector = "stripe"
tool = "charge"
dlp = { aws_access_key = 1 }
expect = "deny"
expect_rule = "no-secrets"
"#;
        let f = dir.join("cases.toml");
        std::fs::write(&f, cases).unwrap();
        let rep = run_cases(&f).unwrap();
        assert_eq!((rep.passed(), rep.failed()), (2, 1));
        assert!(rep.results[0].passed);
        assert!(!rep.results[1].passed);
        assert_eq!(rep.results[1].actual.effect, Effect::Deny);
        assert_eq!(rep.results[1].actual.rule.as_deref(), Some("office-hours"));
        let text = rep.to_string();
        assert!(text.contains("FAIL night bot at night"), "{text}");
        assert!(text.contains("expected allow, got deny"), "{text}");
        assert!(text.ends_with("2 passed, 1 failed, 3 total"), "{text}");

        // A malformed file is a clean error.
        std::fs::write(&f, "policy = \"p/main.cedar\"\n[[case]]\nname = \"x\"\n").unwrap();
        assert!(matches!(run_cases(&f), Err(Error::CaseFile { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
