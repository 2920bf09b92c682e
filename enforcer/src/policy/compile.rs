//! `Policy::compile`: parse Cedar text, enforce the annotation rules, lint
//! action literals and validate against the enforcer schema.

use super::error::{CheckError, CheckErrors, Severity};
use super::index::ScopeIndex;
use super::schema::{self, build_schema, closest_method, plausible_method, KNOWN_METHODS};
use super::source::{find_in, scan_statements, LineIndex, Statement};
use crate::text::Text;
use cedar_policy::{ActionConstraint, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

/// Annotation keys a policy may carry.
pub const ANNOTATION_KEYS: &[&str] = &["id", "reason", "note", "approval"];

/// Effect of a rule as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleEffect {
    Permit,
    Forbid,
}

/// One rule of a compiled policy, for display and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    pub id: Text,
    pub effect: RuleEffect,
    pub reason: Text,
    pub note: Option<Text>,
    /// `@approval("required")` on a permit.
    pub approval: bool,
    /// 1-based line of the rule's first token.
    pub line: usize,
}

/// Options for [`Policy::compile_with`].
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// DLP detector names known to the daemon (`context.dlp.<name>`).
    pub detectors: Vec<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            detectors: schema::DEFAULT_DETECTORS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A compiled, validated policy. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) source: String,
    pub(crate) file_name: String,
    /// The full set (decisions use `scope`; kept for the reference checks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) pset: PolicySet,
    pub(crate) rules: Vec<RuleInfo>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) detectors: Vec<String>,
    pub(crate) warnings: Vec<CheckError>,
    pub(crate) hash: String,
    /// Scope index and candidate-set cache (shared by clones).
    pub(crate) scope: Arc<ScopeIndex>,
}

/// `sha256:<hex>` of a text.
pub fn hash_source(source: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(source.as_bytes())))
}

struct Ctx<'a> {
    file: &'a str,
    idx: LineIndex<'a>,
    out: CheckErrors,
}

impl Ctx<'_> {
    fn push(&mut self, sev: Severity, offset: usize, message: String, hint: impl Into<String>) {
        let (line, column) = self.idx.line_col(offset);
        let e = CheckError {
            file: self.file.to_string(),
            line,
            column,
            severity: sev,
            message,
            hint: hint.into(),
        };
        match sev {
            Severity::Error => self.out.errors.push(e),
            Severity::Warning => self.out.warnings.push(e),
        }
    }

    fn push_diag(&mut self, sev: Severity, d: &dyn Diagnostic, fallback: usize, hint: &str) {
        let offset = d
            .labels()
            .and_then(|mut l| l.next())
            .map(|l| l.offset())
            .unwrap_or(fallback);
        let mut message = d.to_string();
        // Cedar puts the useful detail of some errors in related diagnostics.
        if let Some(rel) = d.related() {
            for r in rel {
                message.push_str("; ");
                message.push_str(&r.to_string());
            }
        }
        let hint = d
            .help()
            .map(|h| h.to_string())
            .unwrap_or_else(|| hint.to_string());
        self.push(sev, offset, message, hint);
    }
}

fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
}

fn snake_case(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Policy {
    /// Compile with the default detector list.
    pub fn compile(source: &str, file_name: &str) -> Result<Policy, CheckErrors> {
        Self::compile_with(source, file_name, &CompileOptions::default())
    }

    /// Parse, check annotations, lint actions and validate `source`.
    /// On success, warnings are available from [`Policy::warnings`].
    pub fn compile_with(
        source: &str,
        file_name: &str,
        opts: &CompileOptions,
    ) -> Result<Policy, CheckErrors> {
        let mut cx = Ctx {
            file: file_name,
            idx: LineIndex::new(source),
            out: CheckErrors::default(),
        };
        let parsed = match PolicySet::from_str(source) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    cx.push_diag(
                        Severity::Error,
                        e,
                        0,
                        "fix the Cedar syntax at this position",
                    );
                }
                cx.out.sort();
                return Err(cx.out);
            }
        };
        if parsed.templates().next().is_some() {
            cx.push(
                Severity::Error,
                0,
                "policy templates (?principal / ?resource slots) are not supported".into(),
                "write concrete entity references instead of slots",
            );
        }
        // Cedar names the policies policy0, policy1, ... in source order.
        let mut ordered: Vec<_> = parsed
            .policies()
            .map(|p| {
                let n: usize = p
                    .id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse()
                    .unwrap_or(usize::MAX);
                (n, p.clone())
            })
            .collect();
        ordered.sort_by_key(|(n, _)| *n);
        let mut stmts = scan_statements(source);
        if stmts.len() != ordered.len() {
            // Should not happen; keep positions sane rather than wrong.
            stmts = vec![
                Statement {
                    start: 0,
                    end: source.len(),
                    annotations: vec![]
                };
                ordered.len()
            ];
        }

        let mut rules = Vec::new();
        let mut index = HashMap::new();
        let mut pset = PolicySet::new();
        let mut policies = Vec::new();
        let mut unknown_methods: Vec<String> = Vec::new();
        let mut id_lines: HashMap<String, usize> = HashMap::new();
        for ((_, p), st) in ordered.iter().zip(stmts.iter()) {
            let ann_off = |key: &str| {
                st.annotations
                    .iter()
                    .find(|a| a.key == key)
                    .map(|a| a.offset)
                    .unwrap_or(st.start)
            };
            for (k, _) in p.annotations() {
                if !ANNOTATION_KEYS.contains(&k) {
                    cx.push(
                        Severity::Error,
                        ann_off(k),
                        format!("unknown annotation @{k}"),
                        "allowed annotations are @id, @reason, @note and @approval",
                    );
                }
            }
            let effect = match p.effect() {
                cedar_policy::Effect::Permit => RuleEffect::Permit,
                cedar_policy::Effect::Forbid => RuleEffect::Forbid,
            };
            let id = match p.annotation("id") {
                None => {
                    cx.push(
                        Severity::Error,
                        st.start,
                        "rule has no @id annotation".into(),
                        "add @id(\"some-rule-id\") on the line before the rule",
                    );
                    None
                }
                Some(id) if !valid_rule_id(id) => {
                    cx.push(
                        Severity::Error,
                        ann_off("id"),
                        format!("invalid rule id {id:?}"),
                        "use letters, digits and - _ . : / only, e.g. @id(\"deny-delete-tools\")",
                    );
                    None
                }
                Some(id) => {
                    let (line, _) = cx.idx.line_col(ann_off("id"));
                    if let Some(first) = id_lines.get(id) {
                        cx.push(
                            Severity::Error,
                            ann_off("id"),
                            format!("duplicate rule id {id:?} (first used on line {first})"),
                            "every @id must be unique in the file; rename one of them",
                        );
                        None
                    } else {
                        id_lines.insert(id.to_string(), line);
                        Some(id.to_string())
                    }
                }
            };
            let reason = match p.annotation("reason") {
                Some(r) if !snake_case(r) => {
                    cx.push(
                        Severity::Error,
                        ann_off("reason"),
                        format!("reason code {r:?} is not snake_case"),
                        "use lowercase letters, digits and underscores, e.g. @reason(\"destructive_tool\")",
                    );
                    r.to_string()
                }
                Some(r) => r.to_string(),
                None => match effect {
                    RuleEffect::Forbid => "policy_forbid".into(),
                    RuleEffect::Permit => "policy_permit".into(),
                },
            };
            let approval = match p.annotation("approval") {
                None => false,
                Some("required") if effect == RuleEffect::Permit => true,
                Some("required") => {
                    cx.push(
                        Severity::Error,
                        ann_off("approval"),
                        "@approval is only meaningful on a permit rule".into(),
                        "remove @approval from this forbid, or make the rule a permit",
                    );
                    false
                }
                Some(v) => {
                    cx.push(
                        Severity::Error,
                        ann_off("approval"),
                        format!("unknown @approval value {v:?}"),
                        "the only accepted form is @approval(\"required\")",
                    );
                    false
                }
            };
            let note = p
                .annotation("note")
                .filter(|n| !n.is_empty())
                .map(str::to_string);

            // Action literals must be plausible MCP methods.
            let uids: Vec<_> = match p.action_constraint() {
                ActionConstraint::Any => vec![],
                ActionConstraint::Eq(u) => vec![u],
                ActionConstraint::In(v) => v,
            };
            for u in uids {
                let ty = u.type_name().to_string();
                let m = u.id().unescaped().to_string();
                let off =
                    find_in(source, st.start, st.end, &format!("\"{m}\"")).unwrap_or(st.start);
                if ty != "Action" {
                    // The validator reports this too; keep a clear message.
                    continue;
                }
                if KNOWN_METHODS.contains(&m.as_str()) {
                    continue;
                }
                let hint = match closest_method(&m) {
                    Some(k) => format!("did you mean Action::\"{k}\"?"),
                    None => "action ids are JSON-RPC method names such as Action::\"tools/call\""
                        .to_string(),
                };
                if plausible_method(&m) {
                    cx.push(
                        Severity::Warning,
                        off,
                        format!("Action::{m:?} is not a known MCP method"),
                        hint,
                    );
                    if !unknown_methods.contains(&m) {
                        unknown_methods.push(m);
                    }
                } else {
                    cx.push(
                        Severity::Error,
                        off,
                        format!("Action::{m:?} is not a valid JSON-RPC method name"),
                        hint,
                    );
                }
            }

            if let Some(id) = id {
                let (line, _) = cx.idx.line_col(st.start);
                index.insert(id.clone(), rules.len());
                rules.push(RuleInfo {
                    id: id.as_str().into(),
                    effect,
                    reason: reason.into(),
                    note: note.map(Into::into),
                    approval,
                    line,
                });
                // Cannot fail: ids were checked unique above.
                let p = p.new_id(PolicyId::new(&id));
                policies.push(p.clone());
                let _ = pset.add(p);
            }
        }

        if cx.out.errors.is_empty() {
            validate(
                &mut cx,
                &pset,
                &unknown_methods,
                &opts.detectors,
                &stmts,
                &rules,
            );
        }
        cx.out.sort();
        if !cx.out.errors.is_empty() {
            return Err(cx.out);
        }
        Ok(Policy {
            source: source.to_string(),
            file_name: file_name.to_string(),
            pset,
            rules,
            index,
            detectors: opts.detectors.clone(),
            warnings: cx.out.warnings,
            hash: hash_source(source),
            scope: Arc::new(ScopeIndex::new(policies)),
        })
    }

    /// Rules in source order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }
    /// `sha256:<hex>` of the source text.
    pub fn hash(&self) -> &str {
        &self.hash
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
    /// Non-fatal findings (unknown methods, impossible rules, ...).
    pub fn warnings(&self) -> &[CheckError] {
        &self.warnings
    }
}

fn validate(
    cx: &mut Ctx<'_>,
    pset: &PolicySet,
    unknown_methods: &[String],
    detectors: &[String],
    stmts: &[Statement],
    rules: &[RuleInfo],
) {
    let mut methods: Vec<String> = KNOWN_METHODS.iter().map(|s| s.to_string()).collect();
    methods.extend(unknown_methods.iter().cloned());
    let schema = match build_schema(&methods, detectors) {
        Ok(s) => s,
        Err(e) => {
            cx.push(
                Severity::Error,
                0,
                format!("internal schema error: {e}"),
                "check the DLP detector names passed to the compiler",
            );
            return;
        }
    };
    // Fallback position for a diagnostic without a span: its rule's start.
    let start_of = |id: &str| {
        rules
            .iter()
            .position(|r| r.id == id)
            .and_then(|i| stmts.get(i))
            .map(|s| s.start)
            .unwrap_or(0)
    };
    let res = Validator::new(schema).validate(pset, ValidationMode::Partial);
    let hint = "entity types are Instance/Agent/User, Tool/Resource/Prompt/Connector; \
                resource.name exists only when action == Action::\"tools/call\" or \"prompts/get\" \
                (guard with `resource is Tool`)";
    for e in res.validation_errors() {
        let fb = start_of(AsRef::<str>::as_ref(e.policy_id()));
        cx.push_diag(Severity::Error, e, fb, hint);
    }
    for w in res.validation_warnings() {
        let fb = start_of(AsRef::<str>::as_ref(w.policy_id()));
        cx.push_diag(
            Severity::Warning,
            w,
            fb,
            "this rule can never match; check its conditions",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> CheckErrors {
        match Policy::compile(src, "p.cedar") {
            Ok(_) => panic!("expected errors"),
            Err(e) => e,
        }
    }

    #[test]
    fn missing_id_and_unknown_annotation_have_lines() {
        let src = "@id(\"a\")\npermit(principal, action, resource);\n\npermit(principal, action, resource);\n@id(\"c\")\n  @colour(\"red\")\nforbid(principal, action, resource);\n";
        let e = errs(src);
        assert_eq!(e.errors.len(), 2, "{e}");
        assert_eq!((e.errors[0].line, e.errors[0].column), (4, 1));
        assert!(e.errors[0].message.contains("no @id"));
        assert_eq!((e.errors[1].line, e.errors[1].column), (6, 3));
        assert!(e.errors[1].message.contains("@colour"));
        assert!(
            e.to_string()
                .starts_with("p.cedar:4:1: error: rule has no @id"),
            "{e}"
        );
        assert!(e.errors[1].hint.contains("@approval"));
    }

    #[test]
    fn bad_reason_and_approval() {
        let src = "@id(\"a\")\n@reason(\"Bad Reason\")\npermit(principal, action, resource);\n@id(\"b\") @approval(\"required\")\nforbid(principal, action, resource);\n@id(\"c\") @approval(\"maybe\") permit(principal, action, resource);";
        let e = errs(src);
        let lines: Vec<_> = e.errors.iter().map(|x| (x.line, x.column)).collect();
        assert_eq!(lines, vec![(2, 1), (4, 10), (6, 10)], "{e}");
    }

    #[test]
    fn duplicate_id() {
        let src = "@id(\"x\") permit(principal, action, resource);\n\n@id(\"x\") forbid(principal, action, resource);";
        let e = errs(src);
        assert_eq!(e.errors.len(), 1);
        assert_eq!((e.errors[0].line, e.errors[0].column), (3, 1));
        assert!(e.errors[0].message.contains("first used on line 1"), "{e}");
    }

    #[test]
    fn syntax_error_line_col() {
        let src =
            "@id(\"a\")\npermit(principal, action, resource)\nwhen { resource.name like \"x\" ;\n";
        let e = errs(src);
        assert!(!e.errors.is_empty());
        let first = &e.errors[0];
        assert_eq!((first.line, first.column), (3, 31), "{e}");
    }

    #[test]
    fn validation_catches_typos_with_position() {
        let src = "@id(\"a\")\npermit(principal, action == Action::\"tools/call\", resource)\nwhen { resource.nmae like \"x\" };";
        let e = errs(src);
        assert_eq!(e.errors[0].line, 3, "{e}");
        assert!(e.errors[0].message.contains("nmae"), "{e}");
        // Unknown detector.
        let src = "@id(\"a\") forbid(principal, action, resource) when { context.dlp.nope > 0 };";
        assert!(errs(src).to_string().contains("nope"));
    }

    #[test]
    fn action_lint() {
        let src = "@id(\"a\")\npermit(principal, action == Action::\"tool/call\", resource);";
        let p = Policy::compile(src, "p.cedar").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.warnings().len(), 1);
        assert_eq!(p.warnings()[0].line, 2);
        assert!(p.warnings()[0].hint.contains("tools/call"));
        let src = "@id(\"a\")\npermit(principal, action in [Action::\"tools/call\", Action::\"bad method\"], resource);";
        let e = errs(src);
        assert_eq!((e.errors[0].line, e.errors[0].column), (2, 60), "{e}");
    }

    #[test]
    fn rules_and_hash() {
        let src = "@id(\"f\") @note(\"n\") forbid(principal, action, resource);\n@id(\"p\") @approval(\"required\") permit(principal, action, resource);";
        let p = Policy::compile(src, "p.cedar").unwrap_or_else(|e| panic!("{e}"));
        let r = p.rules();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].id.as_str(), r[0].effect, r[0].reason.as_str()),
            ("f", RuleEffect::Forbid, "policy_forbid")
        );
        assert_eq!(r[0].note.as_deref(), Some("n"));
        assert!(r[1].approval && r[1].line == 2);
        assert_eq!(p.hash(), hash_source(src));
        assert!(p.hash().starts_with("sha256:") && p.hash().len() == 7 + 64);
    }
}
