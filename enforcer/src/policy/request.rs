//! Building Cedar requests and entities from an MCP call.
//!
//! JSON -> Cedar conversion of tool arguments: objects -> records, arrays ->
//! sets, integers that fit i64 -> Long, strings, bools as is. Floats (and
//! integers beyond i64) become Strings holding their JSON text (`1.5` ->
//! `"1.5"`), because Cedar has no float type and `decimal` only keeps 4
//! places. `null` values are omitted (from records and from sets), so
//! `context.arguments has x` is false for `{"x": null}`.

use super::schema::ResourceKind;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the call comes from on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Surface<'a> {
    /// Executable path of the agent process.
    pub exe: &'a str,
    /// MCP client name; empty when unknown.
    pub client: &'a str,
}

/// Everything about a call except its arguments, DLP results and time:
/// what `tools/list` filtering knows in advance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallTemplate<'a> {
    pub user: &'a str,
    pub agent: &'a str,
    pub instance: &'a str,
    pub surface: Surface<'a>,
    pub connector: &'a str,
    /// JSON-RPC method, e.g. "tools/call".
    pub method: &'a str,
    /// Tool name, resource URI or prompt name (ignored for other methods).
    pub target: &'a str,
    /// The host's label, e.g. "prod".
    pub environment: &'a str,
}

/// One call to decide.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    pub call: CallTemplate<'a>,
    /// Tool-call arguments (`params.arguments`), `Value::Null` if none.
    pub arguments: &'a Value,
    /// Findings per DLP detector; missing detectors count 0.
    pub dlp: &'a BTreeMap<String, u64>,
    pub now: SystemTime,
}

/// Entity type names used in requests, parsed once.
const TYPE_NAMES: [&str; 8] = [
    "Instance",
    "Agent",
    "User",
    "Connector",
    "Action",
    "Tool",
    "Resource",
    "Prompt",
];

static TYPES: LazyLock<Vec<EntityTypeName>> = LazyLock::new(|| {
    TYPE_NAMES
        .iter()
        // Type names are our own constants, always valid.
        .map(|t| EntityTypeName::from_str(t).expect("valid entity type name"))
        .collect()
});

fn uid(ty: &str, id: &str) -> EntityUid {
    let t = match TYPE_NAMES.iter().position(|n| *n == ty) {
        Some(i) => TYPES[i].clone(),
        None => EntityTypeName::from_str(ty).expect("valid entity type name"),
    };
    EntityUid::from_type_name_and_id(t, EntityId::new(id))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

/// Convert JSON into a Cedar restricted expression (`None` for null).
pub fn json_to_cedar(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        Value::String(x) => s(x),
        Value::Array(a) => RestrictedExpression::new_set(a.iter().filter_map(json_to_cedar)),
        Value::Object(o) => record(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_cedar(v)?))),
        ),
    })
}

fn record(pairs: impl IntoIterator<Item = (String, RestrictedExpression)>) -> RestrictedExpression {
    // Keys are unique (they come from a map), so this cannot fail.
    RestrictedExpression::new_record(pairs).expect("record keys are unique")
}

/// `time` record fields (UTC).
pub fn time_parts(now: SystemTime) -> (i64, i64, &'static str, i64) {
    let unix = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[(days + 3).rem_euclid(7) as usize];
    (secs / 3600, (secs % 3600) / 60, weekday, unix)
}

pub(crate) struct Built {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub entities: Entities,
}

/// Most entity sets kept; past it the cache starts over (a host has a bounded set of agents,
/// connectors and tools, so in practice it never fills).
const ENTITY_CACHE_MAX: usize = 4096;

/// Entity sets by (user, agent, instance, connector, method, target): building one computes a
/// transitive closure, which cost more than the decision itself on every call.
static ENTITY_CACHE: LazyLock<std::sync::Mutex<HashMap<String, std::sync::Arc<Built>>>> =
    LazyLock::new(Default::default);

/// What identifies a call template's entities: (user, agent, instance, connector, method,
/// target where the method has one).
pub(crate) fn template_key(t: &CallTemplate<'_>) -> String {
    let kind = ResourceKind::for_method(t.method);
    let target = if kind.target_attr().is_some() {
        t.target
    } else {
        ""
    };
    [t.user, t.agent, t.instance, t.connector, t.method, target].join("\u{0}")
}

/// The entities of a call template, built once per distinct template.
pub(crate) fn entities_for(t: &CallTemplate<'_>) -> Result<std::sync::Arc<Built>, String> {
    let key = template_key(t);
    if let Some(b) = ENTITY_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(b.clone());
    }
    let built = std::sync::Arc::new(build_entities(t)?);
    let mut cache = ENTITY_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= ENTITY_CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, built.clone());
    Ok(built)
}

/// Build principal/action/resource and the entity hierarchy.
fn build_entities(t: &CallTemplate<'_>) -> Result<Built, String> {
    let principal = uid("Instance", &format!("{}/{}", t.agent, t.instance));
    let agent = uid("Agent", t.agent);
    let user = uid("User", t.user);
    let connector = uid("Connector", t.connector);
    let kind = ResourceKind::for_method(t.method);
    let action = uid("Action", t.method);
    let mut ents = vec![
        Entity::new(
            principal.clone(),
            HashMap::from([
                ("agent".to_string(), s(t.agent)),
                ("instance".to_string(), s(t.instance)),
                ("user".to_string(), s(t.user)),
            ]),
            HashSet::from([agent.clone(), user.clone()]),
        )
        .map_err(|e| e.to_string())?,
        Entity::with_uid(agent),
        Entity::with_uid(user),
        Entity::with_uid(connector.clone()),
    ];
    let resource = match kind.target_attr() {
        None => connector,
        Some(attr) => {
            let r = uid(kind.type_name(), t.target);
            ents.push(
                Entity::new(
                    r.clone(),
                    HashMap::from([
                        (attr.to_string(), s(t.target)),
                        ("connector".to_string(), s(t.connector)),
                    ]),
                    HashSet::from([connector]),
                )
                .map_err(|e| e.to_string())?,
            );
            r
        }
    };
    let entities = Entities::from_entities(ents, None).map_err(|e| e.to_string())?;
    Ok(Built {
        principal,
        action,
        resource,
        entities,
    })
}

fn fixed_context(t: &CallTemplate<'_>) -> Vec<(String, RestrictedExpression)> {
    vec![
        ("environment".into(), s(t.environment)),
        ("connector".into(), s(t.connector)),
        (
            "surface".into(),
            record([
                ("exe".to_string(), s(t.surface.exe)),
                ("client".to_string(), s(t.surface.client)),
            ]),
        ),
    ]
}

/// The full concrete request.
pub(crate) fn build_request(
    req: &CallRequest<'_>,
    detectors: &[String],
) -> Result<(Request, std::sync::Arc<Built>), String> {
    let b = entities_for(&req.call)?;
    let mut ctx = fixed_context(&req.call);
    let args = match req.arguments {
        Value::Object(_) => json_to_cedar(req.arguments).expect("object converts"),
        _ => record([]),
    };
    ctx.push(("arguments".into(), args));
    let mut dlp: BTreeMap<String, i64> = detectors.iter().map(|d| (d.clone(), 0)).collect();
    for (k, v) in req.dlp {
        dlp.insert(k.clone(), i64::try_from(*v).unwrap_or(i64::MAX));
    }
    ctx.push((
        "dlp".into(),
        record(
            dlp.into_iter()
                .map(|(k, v)| (k, RestrictedExpression::new_long(v))),
        ),
    ));
    let (hour, minute, weekday, unix) = time_parts(req.now);
    ctx.push((
        "time".into(),
        record([
            ("hour".to_string(), RestrictedExpression::new_long(hour)),
            ("minute".to_string(), RestrictedExpression::new_long(minute)),
            ("weekday".to_string(), s(weekday)),
            ("unix".to_string(), RestrictedExpression::new_long(unix)),
        ]),
    ));
    request_for(b, Context::from_pairs(ctx).map_err(|e| e.to_string())?)
}

/// The request with an empty context, for rules that never read it.
pub(crate) fn build_request_without_context(
    t: &CallTemplate<'_>,
) -> Result<(Request, std::sync::Arc<Built>), String> {
    request_for(entities_for(t)?, Context::empty())
}

/// The Cedar request of these entities with `context`.
fn request_for(
    b: std::sync::Arc<Built>,
    context: Context,
) -> Result<(Request, std::sync::Arc<Built>), String> {
    let request = Request::new(
        b.principal.clone(),
        b.action.clone(),
        b.resource.clone(),
        context,
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok((request, b))
}

/// A request whose `arguments`, `dlp` and `time` are unknown (partial eval).
pub(crate) fn build_partial_request(
    t: &CallTemplate<'_>,
) -> Result<(Request, std::sync::Arc<Built>), String> {
    let b = entities_for(t)?;
    let mut ctx = fixed_context(t);
    for k in ["arguments", "dlp", "time"] {
        ctx.push((k.into(), RestrictedExpression::new_unknown(k)));
    }
    request_for(b, Context::from_pairs(ctx).map_err(|e| e.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_parts_utc() {
        // 2024-05-06T13:45:00Z is a Monday.
        let t = UNIX_EPOCH + Duration::from_secs(1_715_003_100);
        assert_eq!(time_parts(t), (13, 45, "mon", 1_715_003_100));
        assert_eq!(time_parts(UNIX_EPOCH).2, "thu");
    }

    #[test]
    fn json_conversion_drops_nulls_and_stringifies_floats() {
        let v = serde_json::json!({"a": 1, "b": null, "c": 1.5, "d": [1, null], "e": {"f": true}});
        let e = format!("{:?}", json_to_cedar(&v).unwrap());
        assert!(e.contains("\"1.5\""), "{e}");
        assert!(!e.contains("\"b\""), "{e}");
        assert!(e.contains("true"), "{e}");
        assert!(json_to_cedar(&Value::Null).is_none());
    }
}
