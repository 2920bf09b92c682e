//! The gate every MCP call passes: the active policy version, the DLP detectors and the
//! rollout mode combined into one verdict, and the same judgement applied to what comes back
//! (tool results masked, tools/list filtered). Swappable at runtime: a policy load or a config
//! reload replaces the active parts without touching live flows.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    audit::receipt::{CanonicalJson, PolicyTicket, Text},
    dlp::Dlp,
    policy::{self, Effect, Policy, VersionMeta},
};

/// Whether denials are enforced or only recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Evaluate and record would-be denials, forward everything (rolling out a new policy).
    Shadow,
}

/// The policy version in force.
pub struct ActivePolicy {
    pub meta: VersionMeta,
    pub policy: Policy,
    /// The version's id and hash as every receipt's ticket carries them.
    version: Text,
    hash: Text,
}

/// Who asks for what: the parts of a call the policy reads.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub user: &'a str,
    pub agent: &'a str,
    pub instance: &'a str,
    pub exe: &'a str,
    pub client: Option<&'a str>,
    pub connector: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
    pub arguments: &'a Value,
}

/// What the agent gets for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Allow,
    Deny,
    RequireApproval,
    /// Arguments carry data a detector is configured to block.
    DlpBlock,
}

pub struct Verdict {
    pub enforced: Enforced,
    pub ticket: PolicyTicket,
    /// Detector matches in the arguments (counts only).
    pub findings: BTreeMap<String, u32>,
    /// Arguments as the receipt stores them (canonical JSON): every match redacted.
    pub redacted_arguments: Option<CanonicalJson>,
    /// Arguments to forward instead of the agent's, when a detector's action is `redact`.
    pub forward_arguments: Option<Value>,
}

pub struct Gate {
    pub environment: Text,
    pub mode: Mode,
    pub defaults: policy::Defaults,
    active: ArcSwapOption<ActivePolicy>,
    dlp: ArcSwap<Dlp>,
}

impl Gate {
    pub fn new(environment: String, mode: Mode, defaults: policy::Defaults, dlp: Dlp) -> Self {
        Self {
            environment: environment.into(),
            mode,
            defaults,
            active: ArcSwapOption::empty(),
            dlp: ArcSwap::from_pointee(dlp),
        }
    }

    pub fn activate(&self, meta: VersionMeta, policy: Policy) {
        self.active.store(Some(Arc::new(ActivePolicy {
            version: meta.id.as_str().into(),
            hash: meta.hash.as_str().into(),
            meta,
            policy,
        })));
    }

    pub fn active(&self) -> Option<Arc<ActivePolicy>> {
        self.active.load_full()
    }

    pub fn dlp(&self) -> Arc<Dlp> {
        self.dlp.load_full()
    }

    fn template<'a>(&'a self, call: &Call<'a>) -> policy::CallTemplate<'a> {
        policy::CallTemplate {
            user: call.user,
            agent: call.agent,
            instance: call.instance,
            surface: policy::Surface {
                exe: call.exe,
                client: call.client.unwrap_or_default(),
            },
            connector: call.connector,
            method: call.method,
            target: call.target.unwrap_or_default(),
            environment: self.environment.as_str(),
        }
    }

    /// Judge one request.
    pub fn judge(&self, call: &Call<'_>) -> Verdict {
        let dlp = self.dlp();
        let has_arguments = !call.arguments.is_null();
        let args = if has_arguments {
            Some(dlp.arguments_verdict(call.arguments))
        } else {
            None
        };
        let findings = args
            .as_ref()
            .map(|a| a.findings.as_map().clone())
            .unwrap_or_default();
        // Only what was found: the policy fills in 0 for its other detectors (compiled with
        // the daemon's detector names), so `context.dlp.email > 0` never errors. Most calls
        // find nothing, and an empty map costs nothing.
        let counts: BTreeMap<String, u64> = findings
            .iter()
            .map(|(n, c)| (n.clone(), u64::from(*c)))
            .collect();
        let active = self.active();
        let (decision, version, hash) = match &active {
            Some(a) => (
                a.policy.decide(
                    &policy::CallRequest {
                        call: self.template(call),
                        arguments: call.arguments,
                        dlp: &counts,
                        now: SystemTime::now(),
                    },
                    &self.defaults,
                ),
                a.version.clone(),
                a.hash.clone(),
            ),
            None => (
                default_decision(self.defaults.for_method(call.method)),
                Text::word("none"),
                Text::default(),
            ),
        };
        if !decision.errors.is_empty() {
            tracing::warn!(
                errors = ?decision.errors,
                "policy rules failed to evaluate for this call; they were treated as not matching"
            );
        }
        let would = match decision.effect {
            Effect::Allow => Enforced::Allow,
            Effect::Deny => Enforced::Deny,
            Effect::RequireApproval => Enforced::RequireApproval,
        };
        let mut ticket = PolicyTicket {
            version,
            version_hash: hash,
            environment: self.environment.clone(),
            decision: Text::word(effect_name(would)),
            rule: decision.rule,
            reason_code: decision.reason_code,
            note: decision.note,
            shadow_decision: None,
        };
        let mut enforced = would;
        if self.mode == Mode::Shadow && would != Enforced::Allow {
            ticket.shadow_decision = Some(ticket.decision.clone());
            ticket.decision = Text::word("allow");
            enforced = Enforced::Allow;
        }
        // A configured DLP block stands whatever the policy said (and in shadow mode too:
        // it is the data's rule, not the policy's).
        if enforced == Enforced::Allow {
            if let Some(a) = &args {
                if let Some(detector) = a.block.first() {
                    enforced = Enforced::DlpBlock;
                    ticket.decision = Text::word("deny");
                    ticket.rule = Some(format!("dlp:{detector}").into());
                    ticket.reason_code = Text::word("dlp_block");
                    ticket.note = Some(format!(
                        "the arguments contain data the {detector} detector blocks; remove it or use a binding"
                    ).into());
                }
            }
        }
        let (redacted_arguments, forward_arguments) = match args {
            Some(a) => {
                // The receipt keeps nothing any detector matched, whatever its action.
                let stored = if a.findings.is_empty() {
                    CanonicalJson::from_value(call.arguments)
                } else {
                    let mut copy = call.arguments.clone();
                    dlp.redact_value(&mut copy);
                    CanonicalJson::from_value(&copy)
                };
                (Some(stored), a.redacted)
            }
            None => (None, None),
        };
        Verdict {
            enforced,
            ticket,
            findings,
            redacted_arguments,
            forward_arguments,
        }
    }

    /// Remove from a tools/list result the tools this caller could never call. Returns the
    /// names of the hidden tools.
    pub fn filter_tools(&self, call: &Call<'_>, result: &mut Value) -> Vec<String> {
        let Some(active) = self.active() else {
            // No policy: only the default applies, and it does not depend on the tool.
            if self.defaults.for_method("tools/call") == Effect::Deny && self.mode == Mode::Enforce
            {
                return hide_all(result);
            }
            return Vec::new();
        };
        if self.mode == Mode::Shadow {
            return Vec::new();
        }
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return Vec::new();
        };
        let mut hidden = Vec::new();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return true;
            };
            let probe = Call {
                method: "tools/call",
                target: Some(name),
                arguments: &Value::Null,
                ..*call
            };
            let keep = active
                .policy
                .could_ever_call(&self.template(&probe), &self.defaults);
            if !keep {
                hidden.push(name.to_string());
            }
            keep
        });
        hidden
    }

    /// Redact what the detectors find in a server's message before the agent sees it.
    pub fn mask(&self, value: &mut Value) -> BTreeMap<String, u32> {
        self.dlp().redact_value(value).as_map().clone()
    }
}

/// What a call gets when no policy version is loaded at all: the configured default.
fn default_decision(effect: Effect) -> policy::Decision {
    policy::Decision {
        effect,
        rule: None,
        reason_code: format!("default_{effect}").into(),
        note: Some(
            "no policy version is loaded on this host; the configured default applied".into(),
        ),
        default_applied: true,
        errors: Vec::new(),
    }
}

fn hide_all(result: &mut Value) -> Vec<String> {
    let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    let names = tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    tools.clear();
    names
}

fn effect_name(e: Enforced) -> &'static str {
    match e {
        Enforced::Allow => "allow",
        Enforced::Deny | Enforced::DlpBlock => "deny",
        Enforced::RequireApproval => "require_approval",
    }
}
