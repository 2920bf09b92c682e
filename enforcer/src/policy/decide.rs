//! Decisions: `Policy::decide` and `Policy::could_ever_call`.

use super::compile::{Policy, RuleEffect};
use super::index::Matched;
use super::request::{
    build_partial_request, build_request, build_request_without_context, CallRequest, CallTemplate,
};
use crate::text::Text;
use cedar_policy::Authorizer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
    RequireApproval,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        })
    }
}

impl std::str::FromStr for Effect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Effect::Allow),
            "deny" => Ok(Effect::Deny),
            "require_approval" => Ok(Effect::RequireApproval),
            o => Err(format!(
                "unknown effect {o:?} (expected allow, deny or require_approval)"
            )),
        }
    }
}

/// What happens when no rule matches, per method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    pub per_method: BTreeMap<String, Effect>,
    pub fallback: Effect,
}

impl Defaults {
    /// Product default: deny tools/call, resources/read and prompts/get;
    /// allow everything else.
    pub fn product() -> Self {
        Defaults {
            per_method: ["tools/call", "resources/read", "prompts/get"]
                .into_iter()
                .map(|m| (m.to_string(), Effect::Deny))
                .collect(),
            fallback: Effect::Allow,
        }
    }
    pub fn for_method(&self, method: &str) -> Effect {
        self.per_method
            .get(method)
            .copied()
            .unwrap_or(self.fallback)
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self::product()
    }
}

/// A decision with its diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub effect: Effect,
    /// `@id` of the deciding rule; `None` when a default applied.
    pub rule: Option<Text>,
    pub reason_code: Text,
    pub note: Option<Text>,
    pub default_applied: bool,
    /// Evaluation errors (the erroring rules were treated as not matching).
    pub errors: Vec<String>,
}

/// A request Cedar refuses to build: fail closed.
fn request_error(e: String) -> Decision {
    let mut d = Decision::default_for(Effect::Deny, vec![e]);
    d.reason_code = "request_error".into();
    d.default_applied = false;
    d
}

impl Decision {
    fn default_for(effect: Effect, errors: Vec<String>) -> Self {
        Decision {
            effect,
            rule: None,
            reason_code: format!("default_{effect}").into(),
            note: None,
            default_applied: true,
            errors,
        }
    }
}

impl Policy {
    /// Decide one call. Never panics on evaluation errors: they are listed
    /// in `errors` and the rule that errored does not match.
    ///
    /// Only the rules whose scope can match this call are evaluated (see
    /// `index.rs`); the result is the same as evaluating the whole set.
    pub fn decide(&self, req: &CallRequest<'_>, defaults: &Defaults) -> Decision {
        let cands = self.scope.candidates(&req.call);
        if cands.is_empty() {
            // No rule can match or error: Cedar would return nothing. The
            // request is not built: building cannot fail for any input
            // (literal-only attributes and context, entity types all
            // distinct, no schema), so `request_error` cannot be skipped.
            return Decision::default_for(defaults.for_method(req.call.method), Vec::new());
        }
        if !self.scope.reads_context(&cands) {
            // The decision depends on the template alone: Cedar runs once per template.
            let mut failed = None;
            let m = self.scope.memoized(&req.call, || {
                match build_request_without_context(&req.call) {
                    Ok((request, entities)) => {
                        let pset = self.scope.policy_set(cands);
                        let resp =
                            Authorizer::new().is_authorized(&request, &pset, &entities.entities);
                        self.matched(&resp)
                    }
                    Err(e) => {
                        failed = Some(e);
                        Matched::default()
                    }
                }
            });
            if let Some(e) = failed {
                return request_error(e);
            }
            return self.pick(&m, req.call.method, defaults);
        }
        let (request, entities) = match build_request(req, &self.detectors) {
            Ok(x) => x,
            Err(e) => return request_error(e),
        };
        let pset = self.scope.policy_set(cands);
        let resp = Authorizer::new().is_authorized(&request, &pset, &entities.entities);
        self.pick(&self.matched(&resp), req.call.method, defaults)
    }

    /// `decide` on the full policy set (the pre-index behaviour).
    #[cfg(test)]
    pub(crate) fn decide_reference(&self, req: &CallRequest<'_>, defaults: &Defaults) -> Decision {
        let (request, entities) = match build_request(req, &self.detectors) {
            Ok(x) => x,
            Err(e) => return request_error(e),
        };
        let resp = Authorizer::new().is_authorized(&request, &self.pset, &entities.entities);
        self.pick(&self.matched(&resp), req.call.method, defaults)
    }

    /// The rules Cedar matched (source order) and its errors.
    fn matched(&self, resp: &cedar_policy::Response) -> Matched {
        let mut rules: Vec<usize> = resp
            .diagnostics()
            .reason()
            .filter_map(|id| self.index.get(AsRef::<str>::as_ref(id)).copied())
            .collect();
        rules.sort_unstable();
        Matched {
            rules,
            errors: resp.diagnostics().errors().map(|e| e.to_string()).collect(),
        }
    }

    /// First forbid in source order, else first approval permit, else
    /// first permit, else the method's default.
    fn pick(&self, m: &Matched, method: &str, defaults: &Defaults) -> Decision {
        let errors = m.errors.clone();
        let matched = &m.rules;
        let pick = matched
            .iter()
            .find(|i| self.rules[**i].effect == RuleEffect::Forbid)
            .map(|i| (*i, Effect::Deny))
            .or_else(|| {
                matched
                    .iter()
                    .find(|i| self.rules[**i].approval)
                    .map(|i| (*i, Effect::RequireApproval))
            })
            .or_else(|| matched.first().map(|i| (*i, Effect::Allow)));
        match pick {
            Some((i, effect)) => {
                let r = &self.rules[i];
                Decision {
                    effect,
                    rule: Some(r.id.clone()),
                    reason_code: r.reason.clone(),
                    note: r.note.clone(),
                    default_applied: false,
                    errors,
                }
            }
            None => Decision::default_for(defaults.for_method(method), errors),
        }
    }

    /// For tools/list filtering: `false` only when no arguments, DLP counts
    /// or time could make the call anything but denied. Uses Cedar partial
    /// evaluation with `context.arguments`, `context.dlp` and `context.time`
    /// unknown. Sound: when in doubt (residuals, errors) it answers `true`.
    pub fn could_ever_call(&self, t: &CallTemplate<'_>, defaults: &Defaults) -> bool {
        let Ok((request, entities)) = build_partial_request(t) else {
            return true;
        };
        let pset = self.scope.policy_set(self.scope.candidates(t));
        self.could_ever_call_in(&pset, t, request, &entities.entities, defaults)
    }

    /// `could_ever_call` on the full policy set (the pre-index behaviour).
    #[cfg(test)]
    pub(crate) fn could_ever_call_reference(
        &self,
        t: &CallTemplate<'_>,
        defaults: &Defaults,
    ) -> bool {
        let Ok((request, entities)) = build_partial_request(t) else {
            return true;
        };
        self.could_ever_call_in(&self.pset, t, request, &entities.entities, defaults)
    }

    fn could_ever_call_in(
        &self,
        pset: &cedar_policy::PolicySet,
        t: &CallTemplate<'_>,
        request: cedar_policy::Request,
        entities: &cedar_policy::Entities,
        defaults: &Defaults,
    ) -> bool {
        let resp = Authorizer::new().is_authorized_partial(&request, pset, entities);
        let forbidden = resp.definitely_satisfied().any(|p| {
            self.index
                .get(AsRef::<str>::as_ref(p.id()))
                .is_some_and(|i| self.rules[*i].effect == RuleEffect::Forbid)
        });
        if forbidden {
            return false;
        }
        if defaults.for_method(t.method) != Effect::Deny {
            return true;
        }
        // Default deny: callable only if some permit may match.
        let permit = |p: cedar_policy::Policy| p.effect() == cedar_policy::Effect::Permit;
        resp.definitely_satisfied().any(permit) || resp.nontrivial_residuals().any(permit)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::request::Surface;
    use super::*;
    use serde_json::{json, Value};
    use std::fmt::Write as _;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub const POLICY: &str = r#"
@id("no-delete")
@reason("destructive_tool")
@note("delete_* tools are blocked on every host")
forbid(principal, action == Action::"tools/call", resource)
when { resource.name like "delete_*" };

@id("billing-tools")
permit(principal in Agent::"billing-bot", action == Action::"tools/call", resource in Connector::"stripe");

@id("alice-fs")
permit(principal in User::"alice", action == Action::"tools/call", resource == Tool::"read_file");

@id("no-etc")
@reason("sensitive_path")
forbid(principal, action == Action::"tools/call", resource)
when { context.arguments has path && context.arguments.path like "/etc/*" };

@id("refund-approval")
@approval("required")
@reason("refund_needs_human")
permit(principal in Agent::"billing-bot", action == Action::"tools/call", resource == Tool::"refund");

@id("office-hours")
@reason("outside_office_hours")
forbid(principal in Agent::"night-bot", action == Action::"tools/call", resource)
when { context.time.hour < 8 || context.time.hour >= 18 };

@id("cursor-only")
permit(principal, action == Action::"tools/call", resource == Tool::"deploy")
when { context.surface.client == "cursor" };

@id("no-secrets")
@reason("secret_in_arguments")
forbid(principal, action == Action::"tools/call", resource)
when { context.dlp.aws_access_key > 0 };

@id("night-bot-all")
permit(principal in Agent::"night-bot", action == Action::"tools/call", resource);
"#;

    pub fn tpl<'a>(
        agent: &'a str,
        user: &'a str,
        connector: &'a str,
        tool: &'a str,
    ) -> CallTemplate<'a> {
        CallTemplate {
            user,
            agent,
            instance: "i1",
            surface: Surface {
                exe: "/usr/bin/agent",
                client: "",
            },
            connector,
            method: "tools/call",
            target: tool,
            environment: "prod",
        }
    }

    fn noon() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_715_003_100) // Mon 13:45 UTC
    }

    fn decide_with(
        p: &Policy,
        t: CallTemplate<'_>,
        args: Value,
        dlp: &[(&str, u64)],
        now: SystemTime,
    ) -> Decision {
        let dlp: BTreeMap<String, u64> = dlp.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        p.decide(
            &CallRequest {
                call: t,
                arguments: &args,
                dlp: &dlp,
                now,
            },
            &Defaults::product(),
        )
    }

    fn decide(p: &Policy, t: CallTemplate<'_>, args: Value) -> Decision {
        decide_with(p, t, args, &[], noon())
    }

    fn policy() -> Policy {
        Policy::compile(POLICY, "test.cedar").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn forbid_beats_permit() {
        let p = policy();
        let d = decide(
            &p,
            tpl("billing-bot", "bob", "stripe", "delete_customer"),
            json!({}),
        );
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.rule.as_deref(), Some("no-delete"));
        assert_eq!(d.reason_code, "destructive_tool");
        assert_eq!(
            d.note.as_deref(),
            Some("delete_* tools are blocked on every host")
        );
        assert!(!d.default_applied);
    }

    #[test]
    fn principal_in_agent_permits() {
        let d = decide(
            &policy(),
            tpl("billing-bot", "bob", "stripe", "list_invoices"),
            json!({}),
        );
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.rule.as_deref(), Some("billing-tools"));
        assert_eq!(d.reason_code, "policy_permit");
    }

    #[test]
    fn principal_in_user_permits() {
        let p = policy();
        let d = decide(&p, tpl("any-bot", "alice", "fs", "read_file"), json!({}));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Allow, Some("alice-fs"))
        );
        let d = decide(&p, tpl("any-bot", "mallory", "fs", "read_file"), json!({}));
        assert_eq!(d.effect, Effect::Deny);
    }

    #[test]
    fn require_approval() {
        let d = decide(
            &policy(),
            tpl("billing-bot", "bob", "stripe", "refund"),
            json!({}),
        );
        assert_eq!(d.effect, Effect::RequireApproval);
        assert_eq!(d.rule.as_deref(), Some("refund-approval"));
        assert_eq!(d.reason_code, "refund_needs_human");
    }

    #[test]
    fn default_deny_for_tools_call_and_allow_for_tools_list() {
        let p = policy();
        let d = decide(
            &p,
            tpl("other-bot", "bob", "github", "create_issue"),
            json!({}),
        );
        assert_eq!(d.effect, Effect::Deny);
        assert!(d.default_applied);
        assert_eq!(d.reason_code, "default_deny");
        assert_eq!(d.rule, None);
        let mut t = tpl("other-bot", "bob", "github", "");
        t.method = "tools/list";
        let d = decide(&p, t, Value::Null);
        assert_eq!(
            (d.effect, d.reason_code.as_str()),
            (Effect::Allow, "default_allow")
        );
        assert!(d.default_applied);
    }

    #[test]
    fn argument_pattern_match_and_absence() {
        let p = policy();
        let t = tpl("billing-bot", "bob", "stripe", "read_config");
        let d = decide(&p, t, json!({"path": "/etc/passwd"}));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Deny, Some("no-etc"))
        );
        assert_eq!(d.reason_code, "sensitive_path");
        let d = decide(&p, t, json!({"path": "/home/bob/x"}));
        assert_eq!(d.effect, Effect::Allow);
        // No `path` argument: the `has` guard makes the rule not match, no error.
        let d = decide(&p, t, json!({"other": 1.5, "n": null}));
        assert_eq!(d.effect, Effect::Allow);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
    }

    #[test]
    fn time_condition() {
        let p = policy();
        let t = tpl("night-bot", "bob", "x", "backup");
        let d = decide_with(&p, t, json!({}), &[], noon());
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Allow, Some("night-bot-all"))
        );
        let late = noon() + Duration::from_secs(6 * 3600); // 19:45
        let d = decide_with(&p, t, json!({}), &[], late);
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Deny, Some("office-hours"))
        );
    }

    #[test]
    fn surface_condition() {
        let p = policy();
        let mut t = tpl("x-bot", "bob", "ci", "deploy");
        assert_eq!(decide(&p, t, json!({})).effect, Effect::Deny);
        t.surface.client = "cursor";
        let d = decide(&p, t, json!({}));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Allow, Some("cursor-only"))
        );
    }

    #[test]
    fn dlp_count_condition() {
        let p = policy();
        let t = tpl("billing-bot", "bob", "stripe", "charge");
        let d = decide_with(&p, t, json!({}), &[("aws_access_key", 2)], noon());
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Deny, Some("no-secrets"))
        );
        let d = decide_with(&p, t, json!({}), &[("email", 3)], noon());
        assert_eq!(d.effect, Effect::Allow);
    }

    #[test]
    fn evaluation_error_is_reported_not_matched() {
        // `context.arguments.path` without `has`: errors when absent.
        let src = r#"@id("bad") forbid(principal, action == Action::"tools/call", resource) when { context.arguments.path like "/etc/*" };
@id("ok") permit(principal, action == Action::"tools/call", resource);"#;
        let p = Policy::compile(src, "e.cedar").unwrap_or_else(|e| panic!("{e}"));
        let d = decide(&p, tpl("a", "u", "c", "t"), json!({}));
        assert_eq!((d.effect, d.rule.as_deref()), (Effect::Allow, Some("ok")));
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert!(d.errors[0].contains("bad"), "{:?}", d.errors);
    }

    #[test]
    fn decisions_that_cannot_depend_on_the_context_are_memoized_per_template() {
        let src = r#"@id("no-del") forbid(principal, action == Action::"tools/call", resource) when { resource.name like "delete_*" };
@id("bots") permit(principal in Agent::"bot", action == Action::"tools/call", resource);
@id("small") permit(principal in Agent::"ctx", action == Action::"tools/call", resource) when { context.arguments has n && context.arguments.n < 5 };"#;
        let p = Policy::compile(src, "m.cedar").unwrap_or_else(|e| panic!("{e}"));
        let memo = || p.scope.verdicts_len();
        // Context-free candidates: one Cedar run per template, the same answer every time.
        for _ in 0..3 {
            let d = decide(&p, tpl("bot", "u", "c", "read"), json!({"n": 100}));
            assert_eq!((d.effect, d.rule.as_deref()), (Effect::Allow, Some("bots")));
            let d = decide(&p, tpl("bot", "u", "c", "delete_all"), json!({}));
            assert_eq!(
                (d.effect, d.rule.as_deref()),
                (Effect::Deny, Some("no-del"))
            );
        }
        assert_eq!(memo(), 2);
        // A candidate reads the context: decided per call, never memoized.
        let small = decide(&p, tpl("ctx", "u", "c", "read"), json!({"n": 1}));
        let large = decide(&p, tpl("ctx", "u", "c", "read"), json!({"n": 100}));
        assert_eq!(
            (small.effect, small.rule.as_deref()),
            (Effect::Allow, Some("small"))
        );
        assert_eq!(large.effect, Effect::Deny, "the default");
        assert_eq!(memo(), 2);
        // Every answer equals the full evaluation.
        for (t, args) in [
            (tpl("bot", "u", "c", "read"), json!({})),
            (tpl("bot", "u", "c", "delete_all"), json!({})),
            (tpl("ctx", "u", "c", "read"), json!({"n": 2})),
        ] {
            let dlp = BTreeMap::new();
            let req = CallRequest {
                call: t,
                arguments: &args,
                dlp: &dlp,
                now: noon(),
            };
            let (a, b) = (
                p.decide(&req, &Defaults::product()),
                p.decide_reference(&req, &Defaults::product()),
            );
            assert_eq!((a.effect, a.rule), (b.effect, b.rule));
        }
    }

    #[test]
    fn could_ever_call_both_ways() {
        let p = policy();
        let d = Defaults::product();
        // Forbidden on the tool name alone.
        assert!(!p.could_ever_call(&tpl("billing-bot", "bob", "stripe", "delete_all"), &d));
        // Default deny and no permit can match.
        assert!(!p.could_ever_call(&tpl("other-bot", "bob", "github", "create_issue"), &d));
        // Permitted unless some arguments are bad: must stay visible.
        assert!(p.could_ever_call(&tpl("billing-bot", "bob", "stripe", "read_config"), &d));
        // Depends on time only: visible.
        assert!(p.could_ever_call(&tpl("night-bot", "bob", "x", "backup"), &d));
        // Depends on the surface, which is known: hidden for the wrong client.
        assert!(!p.could_ever_call(&tpl("x-bot", "bob", "ci", "deploy"), &d));
        // A permit conditioned on arguments keeps the tool visible.
        let src = r#"@id("p") permit(principal, action == Action::"tools/call", resource == Tool::"write")
when { context.arguments has path && context.arguments.path like "/tmp/*" };"#;
        let q = Policy::compile(src, "q.cedar").unwrap_or_else(|e| panic!("{e}"));
        assert!(q.could_ever_call(&tpl("a", "u", "c", "write"), &d));
        assert!(!q.could_ever_call(&tpl("a", "u", "c", "other"), &d));
        // With an allow default, only a certain forbid hides a tool.
        let allow = Defaults {
            per_method: BTreeMap::new(),
            fallback: Effect::Allow,
        };
        assert!(q.could_ever_call(&tpl("a", "u", "c", "other"), &allow));
    }

    /// Varied scopes, guards, unless clauses, eval errors and methods.
    fn varied_policy(n: usize, seed: u64) -> String {
        let mut r = Rng(seed);
        let mut s = String::new();
        for i in 0..n {
            let k = r.next(6);
            let a = r.next(3);
            let rule = match r.next(12) {
                0 => format!(
                    r#"forbid(principal, action == Action::"tools/call", resource) when {{ resource.name like "t{a}*" }};"#
                ),
                1 => format!(
                    r#"permit(principal in Agent::"a{k}", action == Action::"tools/call", resource in Connector::"c{a}");"#
                ),
                2 => format!(
                    r#"permit(principal == Instance::"a{k}/i{a}", action in [Action::"tools/call", Action::"prompts/get"], resource);"#
                ),
                3 => format!(
                    r#"forbid(principal, action, resource in Connector::"c{k}") when {{ context.environment == "prod" && context.dlp.email > {a} }};"#
                ),
                4 => format!(
                    r#"permit(principal is Instance in User::"u{k}", action == Action::"resources/read", resource) when {{ resource.uri like "file:///d{a}/*" }};"#
                ),
                5 => format!(
                    r#"forbid(principal, action == Action::"tools/call", resource == Tool::"t{k}") when {{ context.arguments.path like "/etc/*" }};"#
                ),
                6 => format!(
                    r#"@approval("required") permit(principal, action == Action::"tools/call", resource is Tool) when {{ resource.connector == "c{k}" && context.surface.client == "cl{a}" }} unless {{ context.time.hour < 9 }};"#
                ),
                7 => format!(
                    r#"permit(principal, action, resource) when {{ context.connector == "c{k}" && context.surface.exe like "*/n*" }};"#
                ),
                8 => format!(
                    r#"forbid(principal in Agent::"a{k}", action == Action::"tools/list", resource == Connector::"c{a}");"#
                ),
                9 => format!(
                    r#"permit(principal, action == Action::"prompts/get", resource == Prompt::"t{k}") when {{ "u{a}" == principal.user || principal.agent like "a*" }};"#
                ),
                10 => format!(
                    r#"permit(principal, action in [Action::"tools/call", Action::"tools/call"], resource) when {{ resource.name == "t{k}" && context.arguments has q && context.arguments.q == "v" }};"#
                ),
                _ => format!(
                    r#"@note("n{i}") forbid(principal, action == Action::"ping", resource) unless {{ context.surface.client == "cl{k}" }};"#
                ),
            };
            let _ = writeln!(s, "@id(\"r{i}\")\n{rule}\n");
        }
        s
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }
    }

    #[test]
    fn indexed_decide_equals_full_set() {
        let src = varied_policy(300, 7);
        let p = Policy::compile(&src, "v.cedar").unwrap_or_else(|e| panic!("{e}"));
        let d = Defaults::product();
        let mut r = Rng(0xDEAD_BEEF_1234_5678);
        let methods = [
            "tools/call",
            "tools/call",
            "resources/read",
            "prompts/get",
            "tools/list",
            "ping",
        ];
        let (mut non_default, mut with_errors, mut hidden) = (0, 0, 0);
        for n in 0..400 {
            let agent = format!("a{}", r.next(7));
            let instance = format!("i{}", r.next(4));
            let user = format!("u{}", r.next(7));
            let connector = format!("c{}", r.next(7));
            let client = format!("cl{}", r.next(4));
            let method = methods[r.next(methods.len() as u64) as usize];
            let target = if method == "resources/read" {
                format!("file:///d{}/x", r.next(4))
            } else {
                format!("t{}", r.next(12))
            };
            let t = CallTemplate {
                user: &user,
                agent: &agent,
                instance: &instance,
                surface: Surface {
                    exe: if r.next(2) == 0 {
                        "/usr/bin/node"
                    } else {
                        "/bin/x"
                    },
                    client: if r.next(4) == 0 { "" } else { &client },
                },
                connector: &connector,
                method,
                target: &target,
                environment: if r.next(3) == 0 { "dev" } else { "prod" },
            };
            let args = match r.next(4) {
                0 => json!({"path": "/etc/x"}),
                1 => json!({"q": "v"}),
                2 => Value::Null,
                _ => json!({"path": "/tmp/x", "q": "w"}),
            };
            let dlp: BTreeMap<String, u64> = [("email".to_string(), r.next(5))].into();
            let now = noon() + Duration::from_secs(r.next(86_400));
            let req = CallRequest {
                call: t,
                arguments: &args,
                dlp: &dlp,
                now,
            };
            let want = p.decide_reference(&req, &d);
            // Twice: cold and cached candidate set.
            assert_eq!(p.decide(&req, &d), want, "request {n}: {t:?}");
            assert_eq!(p.decide(&req, &d), want, "request {n} (cached): {t:?}");
            let ever = p.could_ever_call_reference(&t, &d);
            assert_eq!(
                p.could_ever_call(&t, &d),
                ever,
                "could_ever_call {n}: {t:?}"
            );
            non_default += usize::from(!want.default_applied);
            with_errors += usize::from(!want.errors.is_empty());
            hidden += usize::from(!ever);
        }
        // The comparison must have exercised every path.
        assert!(non_default > 100, "{non_default}");
        assert!(with_errors > 10, "{with_errors}");
        assert!(hidden > 10 && hidden < 390, "{hidden}");
    }

    #[test]
    fn candidate_cache_is_bounded() {
        use super::super::index::SET_CACHE_CAP;
        let p = Policy::compile(&varied_policy(20, 3), "v.cedar").unwrap();
        for i in 0..(SET_CACHE_CAP + 10) {
            let v: Vec<u32> = (0..20u32).filter(|b| (i >> b) & 1 == 1).collect();
            p.scope.policy_set(v);
        }
        assert!(p.scope.cache_len() <= SET_CACHE_CAP);
        assert!(p.scope.cache_len() > 0);
    }
}
