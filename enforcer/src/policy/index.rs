//! Scope index: per request, only the rules whose scope (and leading,
//! cheaply checkable conditions) can match are handed to Cedar.
//!
//! Exactness: Cedar evaluates a policy as
//! `principal-scope && action-scope && resource-scope && when/unless...`
//! with short-circuit `&&`. A rule is left out only when a prefix of that
//! chain is *certainly false without any error* for the request (the scope,
//! then leading `&&`-conjuncts of the `when` clauses of the forms
//! `<attr> like "pat"` / `<attr> == "lit"` on attributes we know to exist).
//! Such a rule can neither be satisfied nor report an error, so the subset
//! gives the same satisfied rules and the same errors, in the same (source)
//! order, as the full set. Anything not understood is kept ("maybe").

use super::request::CallTemplate;
use super::schema::ResourceKind;
use cedar_policy::{
    ActionConstraint, EntityUid, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Most cached candidate policy sets; the cache is cleared when full
/// (tool names come from servers, so keys are unbounded).
pub(crate) const SET_CACHE_CAP: usize = 4096;

/// A `uid` as (type, id) strings.
fn parts(u: &EntityUid) -> (String, String) {
    (u.type_name().to_string(), u.id().unescaped().to_string())
}

/// Principal scope. The request principal is `Instance::"<agent>/<instance>"`,
/// member of `Agent::"<agent>"` and `User::"<user>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principal {
    Any,
    Never,
    Instance(String),
    Agent(String),
    User(String),
}

impl Principal {
    fn of_in(u: &EntityUid) -> Self {
        let (ty, id) = parts(u);
        match ty.as_str() {
            "Instance" => Principal::Instance(id),
            "Agent" => Principal::Agent(id),
            "User" => Principal::User(id),
            _ => Principal::Never,
        }
    }
    fn new(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Principal::Any,
            PrincipalConstraint::Eq(u) => match Self::of_in(&u) {
                p @ Principal::Instance(_) => p,
                _ => Principal::Never,
            },
            PrincipalConstraint::In(u) => Self::of_in(&u),
            PrincipalConstraint::Is(t) if t.to_string() == "Instance" => Principal::Any,
            PrincipalConstraint::IsIn(t, u) if t.to_string() == "Instance" => Self::of_in(&u),
            PrincipalConstraint::Is(_) | PrincipalConstraint::IsIn(..) => Principal::Never,
        }
    }
    fn matches(&self, t: &CallTemplate<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::Never => false,
            Principal::Agent(a) => a == t.agent,
            Principal::User(u) => u == t.user,
            Principal::Instance(id) => {
                id.len() == t.agent.len() + 1 + t.instance.len()
                    && id.starts_with(t.agent)
                    && id[t.agent.len()..].starts_with('/')
                    && id.ends_with(t.instance)
            }
        }
    }
}

/// Resource scope. The request resource is `<Kind>::"<target>"` (member of
/// `Connector::"<connector>"`) for tools/call, resources/read and
/// prompts/get, else `Connector::"<connector>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resource {
    /// Required type (`is T`).
    ty: Option<String>,
    /// `== uid` or `in uid`.
    uid: Option<(String, String)>,
    /// `in` (true) or `==` (false).
    is_in: bool,
}

impl Resource {
    fn new(c: ResourceConstraint) -> Self {
        let (ty, uid, is_in) = match c {
            ResourceConstraint::Any => (None, None, false),
            ResourceConstraint::Eq(u) => (None, Some(parts(&u)), false),
            ResourceConstraint::In(u) => (None, Some(parts(&u)), true),
            ResourceConstraint::Is(t) => (Some(t.to_string()), None, false),
            ResourceConstraint::IsIn(t, u) => (Some(t.to_string()), Some(parts(&u)), true),
        };
        Resource { ty, uid, is_in }
    }
    fn matches(&self, kind: ResourceKind, t: &CallTemplate<'_>) -> bool {
        let has_target = kind.target_attr().is_some();
        let rty = kind.type_name();
        let rid = if has_target { t.target } else { t.connector };
        if self.ty.as_deref().is_some_and(|ty| ty != rty) {
            return false;
        }
        match &self.uid {
            None => true,
            Some((ty, id)) => {
                (ty == rty && id == rid)
                    || (self.is_in && has_target && ty == "Connector" && id == t.connector)
            }
        }
    }
}

/// A string-valued expression whose value is known before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Resource(&'static str),
    Principal(&'static str),
    Environment,
    Connector,
    SurfaceExe,
    SurfaceClient,
}

impl Field {
    fn parse(e: &Value) -> Option<Field> {
        let dot = e.get(".")?;
        let attr = dot.get("attr")?.as_str()?;
        let left = dot.get("left")?;
        match left.get("Var").and_then(Value::as_str) {
            Some("resource") => ["name", "uri", "connector"]
                .into_iter()
                .find(|a| *a == attr)
                .map(Field::Resource),
            Some("principal") => ["agent", "instance", "user"]
                .into_iter()
                .find(|a| *a == attr)
                .map(Field::Principal),
            Some("context") => match attr {
                "environment" => Some(Field::Environment),
                "connector" => Some(Field::Connector),
                _ => None,
            },
            _ => {
                // context.surface.exe / .client
                let inner = left.get(".")?;
                if inner.get("left")?.get("Var")?.as_str()? != "context"
                    || inner.get("attr")?.as_str()? != "surface"
                {
                    return None;
                }
                match attr {
                    "exe" => Some(Field::SurfaceExe),
                    "client" => Some(Field::SurfaceClient),
                    _ => None,
                }
            }
        }
    }
    /// The value, or `None` if the attribute does not exist for this
    /// request (Cedar would report an error: keep the rule).
    fn value<'a>(self, kind: ResourceKind, t: &CallTemplate<'a>) -> Option<&'a str> {
        Some(match self {
            Field::Resource("connector") if kind.target_attr().is_some() => t.connector,
            Field::Resource(a) if kind.target_attr() == Some(a) => t.target,
            Field::Resource(_) => return None,
            Field::Principal("agent") => t.agent,
            Field::Principal("instance") => t.instance,
            Field::Principal(_) => t.user,
            Field::Environment => t.environment,
            Field::Connector => t.connector,
            Field::SurfaceExe => t.surface.exe,
            Field::SurfaceClient => t.surface.client,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Eq(String),
    /// Literal prefix (fast reject) and the pattern (`None` = wildcard).
    Like(String, Vec<Option<char>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Guard {
    field: Field,
    test: Test,
}

impl Guard {
    fn parse(e: &Value) -> Option<Guard> {
        if let Some(l) = e.get("like") {
            let field = Field::parse(l.get("left")?)?;
            let mut pat = Vec::new();
            for el in l.get("pattern")?.as_array()? {
                match el {
                    Value::String(w) if w == "Wildcard" => pat.push(None),
                    _ => pat.extend(el.get("Literal")?.as_str()?.chars().map(Some)),
                }
            }
            let prefix = pat.iter().map_while(|c| *c).collect();
            return Some(Guard {
                field,
                test: Test::Like(prefix, pat),
            });
        }
        let eq = e.get("==")?;
        let (l, r) = (eq.get("left")?, eq.get("right")?);
        let lit = |v: &Value| v.get("Value")?.as_str().map(str::to_string);
        let (field, s) = match (Field::parse(l), Field::parse(r)) {
            (Some(f), None) => (f, lit(r)?),
            (None, Some(f)) => (f, lit(l)?),
            _ => return None,
        };
        Some(Guard {
            field,
            test: Test::Eq(s),
        })
    }
    /// `Some(bool)`: exact value; `None`: unknown (would error).
    fn eval(&self, kind: ResourceKind, t: &CallTemplate<'_>) -> Option<bool> {
        let v = self.field.value(kind, t)?;
        Some(match &self.test {
            Test::Eq(s) => s == v,
            Test::Like(prefix, pat) => v.starts_with(prefix.as_str()) && wildcard_match(pat, v),
        })
    }
}

/// Cedar's `like`: `None` matches any run of chars (same algorithm).
fn wildcard_match(pat: &[Option<char>], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern idx, text idx)
    while i < text.len() {
        if j < pat.len() && pat[j].is_none() {
            star = Some((j, i));
            j += 1;
        } else if j < pat.len() && pat[j] == Some(text[i]) {
            i += 1;
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    pat[j..].iter().all(Option::is_none)
}

/// Leading conjuncts of `e` we understand, in evaluation order; `false` if
/// something was not understood (stop there).
fn conjuncts(e: &Value, out: &mut Vec<Guard>) -> bool {
    if let Some(and) = e.get("&&") {
        return match (and.get("left"), and.get("right")) {
            (Some(l), Some(r)) => conjuncts(l, out) && conjuncts(r, out),
            _ => false,
        };
    }
    match Guard::parse(e) {
        Some(g) => {
            out.push(g);
            true
        }
        None => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleScope {
    principal: Principal,
    /// `None`: any action; otherwise the methods it can match.
    actions: Option<Vec<String>>,
    resource: Resource,
    guards: Vec<Guard>,
}

impl RuleScope {
    pub(crate) fn new(p: &cedar_policy::Policy) -> Self {
        let actions = match p.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(u) => Some(vec![u]),
            ActionConstraint::In(v) => Some(v),
        }
        .map(|v| {
            v.iter()
                .map(parts)
                .filter(|(ty, _)| ty == "Action")
                .map(|(_, id)| id)
                .collect()
        });
        let mut guards = Vec::new();
        if let Ok(json) = p.to_json() {
            if let Some(conds) = json.get("conditions").and_then(Value::as_array) {
                for c in conds {
                    let when = c.get("kind").and_then(Value::as_str) == Some("when");
                    match c.get("body") {
                        Some(b) if when && conjuncts(b, &mut guards) => {}
                        _ => break,
                    }
                }
            }
        }
        RuleScope {
            principal: Principal::new(p.principal_constraint()),
            actions,
            resource: Resource::new(p.resource_constraint()),
            guards,
        }
    }

    fn resource_may_match(&self, kind: ResourceKind, t: &CallTemplate<'_>) -> bool {
        self.resource.matches(kind, t)
    }

    /// False only if the rule certainly neither matches nor errors.
    fn may_match(&self, kind: ResourceKind, t: &CallTemplate<'_>) -> bool {
        if !self.principal.matches(t) || !self.resource_may_match(kind, t) {
            return false;
        }
        for g in &self.guards {
            match g.eval(kind, t) {
                Some(true) => continue,
                Some(false) => return false,
                None => return true,
            }
        }
        true
    }
}

/// Rules of one action, split by how their resource scope is keyed.
#[derive(Debug, Default)]
struct Bucket {
    /// `resource == / in <Kind>::"<id>"` (not Connector), by id.
    by_target: HashMap<String, Vec<u32>>,
    /// `resource == / in Connector::"<id>"`, by id.
    by_connector: HashMap<String, Vec<u32>>,
    /// Everything else.
    rest: Vec<u32>,
}

impl Bucket {
    fn push(&mut self, i: u32, s: &RuleScope) {
        match &s.resource.uid {
            Some((ty, id)) if ty == "Connector" => {
                self.by_connector.entry(id.clone()).or_default().push(i)
            }
            Some((_, id)) => self.by_target.entry(id.clone()).or_default().push(i),
            None => self.rest.push(i),
        }
    }
}

/// The index of a compiled policy plus a bounded cache of candidate sets.
pub(crate) struct ScopeIndex {
    policies: Vec<cedar_policy::Policy>,
    scopes: Vec<RuleScope>,
    /// Per method named in some action scope (includes any-action rules).
    by_method: HashMap<String, Bucket>,
    /// Rules with an unconstrained action (for other methods).
    any_action: Bucket,
    cache: Mutex<HashMap<Vec<u32>, Arc<PolicySet>>>,
    /// Per rule: whether its text mentions `context` (conservative: a mention inside a string
    /// counts too). A call whose candidate rules never read the context has a decision that
    /// depends on its template alone, which is then memoized.
    reads_context: Vec<bool>,
    /// Matched rules and errors by call template, for templates whose candidates never read
    /// the context.
    verdicts: Mutex<HashMap<String, Arc<Matched>>>,
}

/// What Cedar answered for a call: the matched rules (source order) and the errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matched {
    pub rules: Vec<usize>,
    pub errors: Vec<String>,
}

impl fmt::Debug for ScopeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeIndex")
            .field("rules", &self.scopes.len())
            .field("methods", &self.by_method.len())
            .finish_non_exhaustive()
    }
}

impl ScopeIndex {
    /// `policies` in source order (index = rule index).
    pub(crate) fn new(policies: Vec<cedar_policy::Policy>) -> Self {
        let scopes: Vec<RuleScope> = policies.iter().map(RuleScope::new).collect();
        let mut methods: Vec<&String> = scopes
            .iter()
            .filter_map(|s| s.actions.as_ref())
            .flatten()
            .collect();
        methods.sort();
        methods.dedup();
        let mut by_method: HashMap<String, Bucket> = HashMap::new();
        let mut any_action = Bucket::default();
        for (i, s) in scopes.iter().enumerate() {
            let i = i as u32;
            match &s.actions {
                None => {
                    any_action.push(i, s);
                    for m in &methods {
                        by_method.entry((*m).clone()).or_default().push(i, s);
                    }
                }
                Some(ms) => {
                    for m in ms {
                        let b = by_method.entry(m.clone()).or_default();
                        // `action in [A, A]` lists a method twice.
                        let dup = match &s.resource.uid {
                            Some((ty, id)) if ty == "Connector" => {
                                b.by_connector.get(id).and_then(|v| v.last()) == Some(&i)
                            }
                            Some((_, id)) => b.by_target.get(id).and_then(|v| v.last()) == Some(&i),
                            None => b.rest.last() == Some(&i),
                        };
                        if !dup {
                            b.push(i, s);
                        }
                    }
                }
            }
        }
        let reads_context = policies
            .iter()
            .map(|p| p.to_string().contains("context"))
            .collect();
        ScopeIndex {
            policies,
            scopes,
            by_method,
            any_action,
            cache: Mutex::new(HashMap::new()),
            reads_context,
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    /// Indices (source order) of the rules that may match or error.
    pub(crate) fn candidates(&self, t: &CallTemplate<'_>) -> Vec<u32> {
        let kind = ResourceKind::for_method(t.method);
        let b = self.by_method.get(t.method).unwrap_or(&self.any_action);
        let mut out: Vec<u32> = Vec::new();
        let keyed = if kind.target_attr().is_some() {
            b.by_target.get(t.target)
        } else {
            None
        };
        for list in [keyed, b.by_connector.get(t.connector), Some(&b.rest)]
            .into_iter()
            .flatten()
        {
            out.extend(
                list.iter()
                    .copied()
                    .filter(|i| self.scopes[*i as usize].may_match(kind, t)),
            );
        }
        out.sort_unstable();
        out
    }

    /// The Cedar policy set of exactly these rules, in source order.
    pub(crate) fn policy_set(&self, cands: Vec<u32>) -> Arc<PolicySet> {
        let lock = || self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = lock().get(&cands) {
            return s.clone();
        }
        let mut set = PolicySet::new();
        for i in &cands {
            // Ids are unique (checked at compile time).
            let _ = set.add(self.policies[*i as usize].clone());
        }
        let set = Arc::new(set);
        let mut c = lock();
        if c.len() >= SET_CACHE_CAP {
            c.clear();
        }
        c.insert(cands, set.clone());
        set
    }

    /// Whether any of these rules reads the request context.
    pub(crate) fn reads_context(&self, cands: &[u32]) -> bool {
        cands.iter().any(|i| self.reads_context[*i as usize])
    }

    /// The memoized answer for a template whose candidates never read the context, computing
    /// it with `compute` on a miss.
    pub(crate) fn memoized(
        &self,
        t: &CallTemplate<'_>,
        compute: impl FnOnce() -> Matched,
    ) -> Arc<Matched> {
        let key = super::request::template_key(t);
        let lock = || self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = lock().get(&key) {
            return m.clone();
        }
        let m = Arc::new(compute());
        let mut c = lock();
        if c.len() >= SET_CACHE_CAP {
            c.clear();
        }
        c.insert(key, m.clone());
        m
    }

    #[cfg(test)]
    pub(crate) fn verdicts_len(&self) -> usize {
        self.verdicts.lock().map(|c| c.len()).unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_like_cedar() {
        let p = |s: &str| -> Vec<Option<char>> {
            s.chars()
                .map(|c| if c == '*' { None } else { Some(c) })
                .collect()
        };
        assert!(wildcard_match(&p("danger1_*"), "danger1_drop"));
        assert!(!wildcard_match(&p("danger1_*"), "danger12_drop"));
        assert!(wildcard_match(&p("*a*b"), "xxaxxb"));
        assert!(!wildcard_match(&p("*a*b"), "xxaxxbc"));
        assert!(wildcard_match(&p("*"), ""));
        assert!(wildcard_match(&p(""), ""));
        assert!(!wildcard_match(&p(""), "a"));
        assert!(wildcard_match(&p("a**"), "a"));
        assert!(wildcard_match(&p("é*ü"), "éaaü"));
    }

    #[test]
    fn guards_are_extracted() {
        let ps: PolicySet = r#"forbid(principal, action == Action::"tools/call", resource)
            when { resource.name like "da\*n*" && "x" == context.surface.client && context.time.hour > 1 && resource.name == "q" };"#
            .parse()
            .unwrap();
        let s = RuleScope::new(ps.policies().next().unwrap());
        assert_eq!(s.guards.len(), 2, "{s:?}");
        assert_eq!(s.guards[1].field, Field::SurfaceClient);
    }
}
