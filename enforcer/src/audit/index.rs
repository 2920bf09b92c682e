//! Secondary index keys of receipts, kept in the receipts tree itself under the [`INDEX_NS`]
//! prefix and written in the same `apply_batch` as the record (see `chain.rs`).
//!
//! Key layouts (values are empty):
//! * field index: `b'i' | tag (1) | len (u32 BE) | value | time_ns (u64 BE) | seq (u64 BE)`
//! * time index:  `b'i' | b'T' | time_ns (u64 BE) | seq (u64 BE)`
//!
//! Every key ends with the seq (8 bytes BE), which the chain writer fills in.
//!
//! Every index orders its entries by position = (time_ns, seq), so any index can serve a
//! `since`/`until` window as a key range and all plans return the same newest-first order.

use std::ops::Bound;

use super::receipt::Receipt;

/// An indexed receipt field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    ProtocolSession,
    EnforcerSession,
    Instance,
    Tool,
    Agent,
    User,
    Connector,
    Method,
    Status,
}

impl Field {
    /// All fields, most selective first (the tie-break when probes cannot tell them apart).
    pub const ALL: [Field; 9] = [
        Field::ProtocolSession,
        Field::EnforcerSession,
        Field::Instance,
        Field::Tool,
        Field::Agent,
        Field::User,
        Field::Connector,
        Field::Method,
        Field::Status,
    ];

    fn tag(self) -> u8 {
        match self {
            Field::User => b'u',
            Field::Agent => b'a',
            Field::Instance => b'i',
            Field::Tool => b't',
            Field::Method => b'm',
            Field::EnforcerSession => b'e',
            Field::ProtocolSession => b'p',
            Field::Status => b's',
            Field::Connector => b'c',
        }
    }

    /// The receipt's value for this field; `None` when absent or empty (not indexed).
    pub fn value_of(self, r: &Receipt) -> Option<&str> {
        let v = match self {
            Field::User => Some(r.actor.user.as_str()),
            Field::Agent => Some(r.actor.agent.as_str()),
            Field::Instance => Some(r.actor.instance.as_str()),
            Field::Tool => r
                .request
                .as_ref()
                .filter(|q| q.method == "tools/call")
                .and_then(|q| q.target.as_deref()),
            Field::Method => r.request.as_ref().map(|q| q.method.as_str()),
            Field::EnforcerSession => Some(r.session.enforcer_session.as_str()),
            Field::ProtocolSession => r.session.protocol_session_id.as_deref(),
            Field::Status => Some(r.outcome.status.as_str()),
            Field::Connector => Some(r.connector.connector.as_str()),
        };
        v.filter(|s| !s.is_empty())
    }
}

const TIME_TAG: u8 = b'T';

/// Key prefix of every index key in the receipts tree (record keys start with 0x00, the head
/// key with `~`).
pub const INDEX_NS: &[u8] = b"i";

/// Key of the indexer's watermark ("indexed up to seq", 8 bytes BE): every receipt with a
/// seq <= it has its index keys. Written in the same batch as the index keys it covers. It is
/// inside the index namespace, so `verify` ignores it like every index key.
pub const MARK_KEY: &[u8] = b"i!indexed";

/// Position of a receipt in every index: (time_ns, seq) as 16 big-endian bytes.
pub fn position(time_ns: u64, seq: u64) -> [u8; 16] {
    ((u128::from(time_ns) << 64) | u128::from(seq)).to_be_bytes()
}

/// Splits the trailing position off an index key.
pub fn decode_position(key: &[u8]) -> Option<(u64, u64)> {
    let tail: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    let p = u128::from_be_bytes(tail);
    Some(((p >> 64) as u64, p as u64))
}

/// Key prefix of all entries of `field` = `value`.
pub fn field_prefix(field: Field, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(INDEX_NS.len() + 1 + 4 + value.len() + 16);
    k.extend_from_slice(INDEX_NS);
    k.push(field.tag());
    k.extend_from_slice(&(value.len() as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

/// Key prefix of the time index.
pub fn time_prefix() -> Vec<u8> {
    let mut k = INDEX_NS.to_vec();
    k.push(TIME_TAG);
    k
}

/// Full key of one entry under `prefix`.
pub fn entry_key(prefix: &[u8], time_ns: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&position(time_ns, seq));
    k
}

/// All index keys of a stored receipt (seq assigned).
pub fn index_keys(r: &Receipt) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Field::ALL
        .iter()
        .filter_map(|f| {
            f.value_of(r)
                .map(|v| entry_key(&field_prefix(*f, v), r.time_ns, r.seq))
        })
        .collect();
    keys.push(entry_key(&time_prefix(), r.time_ns, r.seq));
    keys
}

/// Key range under `prefix` for positions in [since, until] (inclusive, ns) and strictly
/// before the `before` position (a cursor), as bounds usable with `Tree::range`.
pub fn range(
    prefix: &[u8],
    since: Option<u64>,
    until: Option<u64>,
    before: Option<(u64, u64)>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = Bound::Included(entry_key(prefix, since.unwrap_or(0), 0));
    let until_pos = (until.unwrap_or(u64::MAX), u64::MAX);
    let upper = match before {
        Some(b) if b <= until_pos => Bound::Excluded(entry_key(prefix, b.0, b.1)),
        _ => Bound::Included(entry_key(prefix, until_pos.0, until_pos.1)),
    };
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::receipt::RequestInfo;

    fn receipt() -> Receipt {
        let mut r = Receipt {
            seq: 7,
            time_ns: 1_000,
            ..Default::default()
        };
        r.actor.user = "alice".into();
        r.actor.agent = "claude".into();
        r.outcome.status = "ok".into();
        r.request = Some(RequestInfo {
            method: "tools/call".into(),
            target: Some("fs.read".into()),
            ..Default::default()
        });
        r
    }

    #[test]
    fn tool_only_for_tools_call_and_empty_values_skipped() {
        let mut r = receipt();
        assert_eq!(Field::Tool.value_of(&r), Some("fs.read"));
        assert_eq!(Field::Instance.value_of(&r), None);
        r.request.as_mut().unwrap().method = "resources/read".into();
        assert_eq!(Field::Tool.value_of(&r), None);
        assert_eq!(Field::Method.value_of(&r), Some("resources/read"));
    }

    #[test]
    fn keys_carry_position_and_prefixes_do_not_collide() {
        let r = receipt();
        let keys = index_keys(&r);
        // user, agent, tool, method, status + time
        assert_eq!(keys.len(), 6);
        for k in &keys {
            assert_eq!(decode_position(k), Some((1_000, 7)));
        }
        // "ab" + position must not fall under the prefix of "a".
        let a = field_prefix(Field::Agent, "a");
        let ab = entry_key(&field_prefix(Field::Agent, "ab"), 1, 1);
        assert!(!ab.starts_with(&a));
    }

    #[test]
    fn range_respects_window_and_cursor() {
        let p = field_prefix(Field::Agent, "x");
        let inside = entry_key(&p, 50, 3);
        let (lo, hi) = range(&p, Some(10), Some(100), None);
        assert!(matches!(&lo, Bound::Included(k) if *k < inside));
        assert!(matches!(&hi, Bound::Included(k) if *k > inside));
        let (_, hi) = range(&p, Some(10), Some(100), Some((50, 3)));
        assert_eq!(hi, Bound::Excluded(inside.clone()));
        // A cursor beyond the window does not widen it.
        let (_, hi) = range(&p, None, Some(20), Some((50, 3)));
        assert!(matches!(&hi, Bound::Included(k) if *k < inside));
    }
}
