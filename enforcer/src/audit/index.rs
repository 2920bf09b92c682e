//! The receipts' secondary indexes: which fields are indexed, and the in-memory posting
//! lists search walks.
//!
//! Every list orders its entries by position = (time_ns, seq), so any list can serve a
//! `since`/`until` window as a range and all plans return the same newest-first order.

use std::collections::HashMap;

use super::{posting_list::PostingList, receipt::Receipt};

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

/// Position of a receipt in every index: (time_ns, seq), ordered as one 128-bit number.
pub fn pos(time_ns: u64, seq: u64) -> u128 {
    (u128::from(time_ns) << 64) | u128::from(seq)
}

/// (time_ns, seq) of a position.
pub fn unpos(p: u128) -> (u64, u64) {
    ((p >> 64) as u64, p as u64)
}

/// Position of a receipt as 16 big-endian bytes (the cursor's encoding).
pub fn position(time_ns: u64, seq: u64) -> [u8; 16] {
    pos(time_ns, seq).to_be_bytes()
}

/// Splits the trailing 16-byte position off `bytes`.
pub fn decode_position(bytes: &[u8]) -> Option<(u64, u64)> {
    let tail: [u8; 16] = bytes.get(bytes.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(unpos(u128::from_be_bytes(tail)))
}

/// What the index keeps of one receipt: its position and indexed field values (owned, so
/// it can travel to whichever thread writes the batch). The values share one string (two
/// allocations a receipt, not one per field).
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub time_ns: u64,
    values: String,
    /// Each field and where its value ends in `values` (it starts where the previous ends).
    ends: Vec<(Field, usize)>,
}

impl IndexEntry {
    pub fn of(r: &Receipt) -> Self {
        let mut values = String::with_capacity(128);
        let mut ends = Vec::with_capacity(Field::ALL.len());
        for f in Field::ALL {
            if let Some(v) = f.value_of(r) {
                values.push_str(v);
                ends.push((f, values.len()));
            }
        }
        IndexEntry {
            time_ns: r.time_ns,
            values,
            ends,
        }
    }

    /// The indexed fields and their values.
    pub fn fields(&self) -> impl Iterator<Item = (Field, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(f, end)| {
            let v = &self.values[start..end];
            start = end;
            (f, v)
        })
    }
}

/// The receipts' secondary indexes, in memory: for every indexed (field, value) the sorted
/// positions of its receipts, plus one list of every position (the time index).
///
/// Why in memory: receipts are written at proxy speed, and a sled insert per field per
/// receipt cost more CPU than the proxy's whole data path (measured: ~70 us a receipt, plus
/// sled's I/O threads). Here an insert is a few hash lookups and pushes (entries arrive
/// nearly in time order, so they land at or near the end of each list). The price: memory
/// (about 180 bytes a receipt) and a rebuild from the log when the store opens (`indexer`).
#[derive(Default)]
pub struct Postings {
    /// One map per field (indexed by `Field as usize`). Hashed with foldhash, seeded per
    /// process: values are agent-chosen (tool names), so not a fixed-key hash, and a fraction
    /// of SipHash's cost on every receipt written.
    by_field: [ValueLists; Field::ALL.len()],
    all: PostingList,
}

type ValueLists = HashMap<Box<str>, PostingList, foldhash::fast::RandomState>;

impl Postings {
    pub fn insert(&mut self, seq: u64, e: &IndexEntry) {
        let p = pos(e.time_ns, seq);
        self.all.insert(p);
        for (f, v) in e.fields() {
            let values = &mut self.by_field[f as usize];
            match values.get_mut(v) {
                Some(list) => list.insert(p),
                None => {
                    let mut list = PostingList::default();
                    list.insert(p);
                    values.insert(v.into(), list);
                }
            }
        }
    }

    /// The sorted positions of receipts with `field` = `value` (None if none).
    pub fn list(&self, field: Field, value: &str) -> Option<&PostingList> {
        self.by_field[field as usize].get(value)
    }

    /// Every position, sorted.
    pub fn all(&self) -> &PostingList {
        &self.all
    }
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
    fn postings_stay_sorted_whatever_the_arrival_order() {
        let mut p = Postings::default();
        let r = receipt();
        let e = IndexEntry::of(&r);
        // user, agent, tool, method, status
        assert_eq!(
            e.fields().collect::<Vec<_>>(),
            [
                (Field::Tool, "fs.read"),
                (Field::Agent, "claude"),
                (Field::User, "alice"),
                (Field::Method, "tools/call"),
                (Field::Status, "ok"),
            ]
        );
        // Mostly in order, some late (a long call's receipt), one far back, one repeated.
        let times = [10u64, 20, 30, 25, 40, 50, 5, 60, 60];
        for (i, t) in times.iter().enumerate() {
            let e = IndexEntry {
                time_ns: *t,
                ..e.clone()
            };
            p.insert(i as u64 + 1, &e);
        }
        p.insert(
            9,
            &IndexEntry {
                time_ns: 60,
                ..e.clone()
            },
        );
        let all: Vec<(u64, u64)> = p.all().iter().map(unpos).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(
            all.len(),
            times.len(),
            "a repeated insert is not a second entry"
        );
        assert_eq!(
            p.list(Field::User, "alice").map(PostingList::len),
            Some(times.len())
        );
        assert!(p.list(Field::User, "bob").is_none());
        // Far-back inserts past the linear probe distance.
        for i in 0..200u64 {
            p.insert(
                100 + i,
                &IndexEntry {
                    time_ns: 1_000 + i,
                    ..e.clone()
                },
            );
        }
        p.insert(
            500,
            &IndexEntry {
                time_ns: 1,
                ..e.clone()
            },
        );
        let all: Vec<u128> = p.all().iter().collect();
        assert_eq!(unpos(all[0]), (1, 500));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let w = p.all().window(pos(20, 0), pos(40, 0));
        assert_eq!(w.map(|x| unpos(x).0).collect::<Vec<_>>(), vec![20, 25, 30]);
        assert_eq!(decode_position(&position(5, 9)), Some((5, 9)));
    }
}
