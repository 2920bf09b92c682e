//! Receipt search over the secondary indexes, and session replay.
//!
//! Receipts the indexes do not cover yet (while the rebuild after a start runs) are read from
//! the log and matched directly, then merged with the indexed results in the same order.
//!
//! Plan: every equality filter is a posting list (narrowed by `since`/`until` and the
//! cursor); the shortest drives (no filter = the time index) and is walked newest first; the
//! other filters are checked by binary search in their lists, and only matching receipts are
//! loaded.
//!
//! Order is newest first by (time_ns, seq). The cursor is the position of the last receipt
//! returned; the next page starts strictly below it, so appends (which land at new positions)
//! never shift or duplicate entries of later pages.

use std::collections::BTreeSet;

use super::error::{AuditError, Result};
use super::index::{decode_position, pos, position, unpos, Field, Postings};
use super::indexer::IndexerState;
use super::log::ReceiptLog;
use super::posting_list::PostingList;
use super::receipt::Receipt;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Search filters, all AND-ed. `None` = no constraint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub user: Option<String>,
    pub agent: Option<String>,
    pub instance: Option<String>,
    /// request.target of tools/call receipts.
    pub tool: Option<String>,
    pub method: Option<String>,
    pub enforcer_session: Option<String>,
    pub protocol_session: Option<String>,
    /// outcome.status
    pub status: Option<String>,
    pub connector: Option<String>,
    /// Inclusive bounds on receipt.time_ns.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Page size; 0 = [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Query {
    fn filters(&self) -> Vec<(Field, &str)> {
        fn f(field: Field, v: &Option<String>) -> Option<(Field, &str)> {
            v.as_deref().map(|v| (field, v))
        }
        [
            f(Field::ProtocolSession, &self.protocol_session),
            f(Field::EnforcerSession, &self.enforcer_session),
            f(Field::Instance, &self.instance),
            f(Field::Tool, &self.tool),
            f(Field::Agent, &self.agent),
            f(Field::User, &self.user),
            f(Field::Connector, &self.connector),
            f(Field::Method, &self.method),
            f(Field::Status, &self.status),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn page_size(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub receipts: Vec<Receipt>,
    /// Present when the page is full; pass it as `Query::cursor` for the next page (which may
    /// be empty).
    pub next_cursor: Option<String>,
    /// Entries walked by the driving list (and records read directly).
    pub scanned: usize,
}

/// Opaque cursor: "c" + 32 hex digits of the (time_ns, seq) position.
pub fn encode_cursor(time_ns: u64, seq: u64) -> String {
    format!("c{}", hex::encode(position(time_ns, seq)))
}

pub fn decode_cursor(s: &str) -> Result<(u64, u64)> {
    let bad = || AuditError::BadCursor(s.chars().take(64).collect());
    let hex_part = s.strip_prefix('c').ok_or_else(bad)?;
    let bytes = hex::decode(hex_part).map_err(|_| bad())?;
    if bytes.len() != 16 {
        return Err(bad());
    }
    decode_position(&bytes).ok_or_else(bad)
}

/// Does `r` satisfy every equality filter, the time window and lie strictly below `before`?
fn matches(r: &Receipt, filters: &[(Field, &str)], q: &Query, before: Option<(u64, u64)>) -> bool {
    filters.iter().all(|(f, v)| f.value_of(r) == Some(*v))
        && q.since.is_none_or(|s| r.time_ns >= s)
        && q.until.is_none_or(|u| r.time_ns <= u)
        && before.is_none_or(|b| (r.time_ns, r.seq) < b)
}

/// Runs `q` against the receipts: through the indexes for every receipt they cover, and by
/// reading the records they do not cover yet (right after a start, while the rebuild runs);
/// the two are merged newest first by (time_ns, seq).
pub fn search(log: &ReceiptLog<Receipt>, indexer: &IndexerState, q: &Query) -> Result<Page> {
    let limit = q.page_size();
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s > u {
            return Ok(Page::default());
        }
    }
    let filters = q.filters();
    let mut page = Page::default();

    // The positions of the matches the indexes know, newest first (under the read lock;
    // the records are loaded after it is released).
    let (found, unindexed) = {
        let ix = indexer.read()?;
        let found = search_indexed(&ix.postings, q, &filters, before, limit, &mut page.scanned);
        (found, ix.unindexed())
    };

    // Not indexed yet: match the records themselves.
    let mut hits: Vec<Receipt> = Vec::new();
    if !unindexed.is_empty() {
        for r in log.records_in(*unindexed.start(), *unindexed.end()) {
            let r = r?;
            page.scanned += 1;
            if matches(&r, &filters, q, before) {
                hits.push(r);
            }
        }
        hits.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
        hits.truncate(limit);
    }
    for p in found {
        let (time_ns, seq) = unpos(p);
        // Re-check the record itself: the index is derived data.
        let Some(r) = log.get(seq)? else { continue };
        if r.time_ns == time_ns && matches(&r, &filters, q, before) {
            hits.push(r);
        }
    }
    hits.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
    if hits.len() >= limit {
        hits.truncate(limit);
        let last = &hits[limit - 1];
        page.next_cursor = Some(encode_cursor(last.time_ns, last.seq));
    }
    page.receipts = hits;
    Ok(page)
}

/// Up to `limit` positions of indexed matches, newest first: the shortest list among the
/// filters (or the time index) drives, narrowed to the window and the cursor; the other
/// filters are checked by binary search in their lists.
fn search_indexed(
    postings: &Postings,
    q: &Query,
    filters: &[(Field, &str)],
    before: Option<(u64, u64)>,
    limit: usize,
    scanned: &mut usize,
) -> Vec<u128> {
    // A filter on a value no receipt has matches nothing.
    let Some(lists) = filters
        .iter()
        .map(|(f, v)| postings.list(*f, v))
        .collect::<Option<Vec<&PostingList>>>()
    else {
        return Vec::new();
    };
    let driver = lists
        .iter()
        .enumerate()
        .min_by_key(|(_, l)| l.len())
        .map(|(i, _)| i);
    let lo = pos(q.since.unwrap_or(0), 0);
    let until = pos(q.until.unwrap_or(u64::MAX), u64::MAX);
    let hi = match before {
        Some((t, s)) => pos(t, s).min(until.saturating_add(1)),
        None => until.saturating_add(1),
    };
    let walk = match driver {
        Some(i) => lists[i],
        None => postings.all(),
    }
    .window(lo, hi);
    let mut out = Vec::new();
    for p in walk.rev() {
        *scanned += 1;
        let all = lists
            .iter()
            .enumerate()
            .all(|(i, l)| Some(i) == driver || l.contains(&p));
        if all {
            out.push(p);
            if out.len() == limit {
                break;
            }
        }
    }
    out
}

/// All receipts of an enforcer session id or a protocol session id, in chain order: through
/// the indexes, and by reading the records they do not cover yet.
pub fn replay(
    log: &ReceiptLog<Receipt>,
    indexer: &IndexerState,
    session: &str,
) -> Result<Vec<Receipt>> {
    if session.is_empty() {
        return Ok(Vec::new());
    }
    let is_ours = |r: &Receipt| {
        r.session.enforcer_session == session
            || r.session.protocol_session_id.as_deref() == Some(session)
    };
    let (seqs, unindexed) = {
        let ix = indexer.read()?;
        let mut seqs = BTreeSet::new();
        for field in [Field::EnforcerSession, Field::ProtocolSession] {
            if let Some(list) = ix.postings.list(field, session) {
                seqs.extend(list.iter().map(|p| unpos(p).1));
            }
        }
        (seqs, ix.unindexed())
    };
    let mut out = Vec::with_capacity(seqs.len());
    if !unindexed.is_empty() {
        for r in log.records_in(*unindexed.start(), *unindexed.end()) {
            let r = r?;
            if is_ours(&r) {
                out.push(r);
            }
        }
    }
    for seq in seqs {
        if let Some(r) = log.get(seq)? {
            if is_ours(&r) {
                out.push(r);
            }
        }
    }
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = encode_cursor(123, 456);
        assert_eq!(decode_cursor(&c).unwrap(), (123, 456));
        assert!(decode_cursor("x").is_err());
        assert!(decode_cursor("czz").is_err());
        assert!(decode_cursor("c00").is_err());
    }

    #[test]
    fn limit_defaults_and_caps() {
        let mut q = Query::default();
        assert_eq!(q.page_size(), DEFAULT_LIMIT);
        q.limit = 5;
        assert_eq!(q.page_size(), 5);
        q.limit = 1_000_000;
        assert_eq!(q.page_size(), MAX_LIMIT);
    }

    use crate::audit::durability::Durability;
    use crate::audit::receipt::RequestInfo;
    use crate::audit::store::tests::{full_receipt, tmp_db};
    use crate::audit::store::AuditStore;
    use std::collections::HashSet;

    pub(super) const N: u64 = 120;
    pub(super) const BASE: u64 = 1_000_000_000;

    pub(super) fn synthetic(i: u64) -> Receipt {
        let mut r = full_receipt(i);
        // Time not in append order, so order by time is really tested.
        r.time_ns = BASE + ((i * 37) % N) * 1_000;
        r.actor.user = format!("u{}", i % 3).into();
        r.actor.agent = format!("a{}", i % 4).into();
        r.actor.instance = format!("in{}", i % 5).into();
        r.request = Some(RequestInfo {
            method: if i.is_multiple_of(6) {
                "tools/list"
            } else {
                "tools/call"
            }
            .into(),
            target: Some(format!("t{}", i % 7).into()),
            ..Default::default()
        });
        r.session.enforcer_session = format!("es{}", i % 8).into();
        r.session.protocol_session_id =
            (i.is_multiple_of(2).then(|| format!("ps{}", i % 9))).map(Into::into);
        r.outcome.status = format!("s{}", i % 5).into();
        r.connector.connector = format!("c{}", i % 2).into();
        r
    }

    fn matches(r: &Receipt, q: &Query) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        let req = r.request.as_ref().unwrap();
        let tool = (req.method == "tools/call").then(|| req.target.as_deref().unwrap());
        eq(&q.user, Some(&r.actor.user))
            && eq(&q.agent, Some(&r.actor.agent))
            && eq(&q.instance, Some(&r.actor.instance))
            && eq(&q.tool, tool)
            && eq(&q.method, Some(&req.method))
            && eq(&q.enforcer_session, Some(&r.session.enforcer_session))
            && eq(
                &q.protocol_session,
                r.session.protocol_session_id.as_deref(),
            )
            && eq(&q.status, Some(&r.outcome.status))
            && eq(&q.connector, Some(&r.connector.connector))
            && q.since.is_none_or(|s| r.time_ns >= s)
            && q.until.is_none_or(|u| r.time_ns <= u)
    }

    async fn store() -> (
        (sled::Db, crate::audit::store::tests::TmpDir),
        AuditStore,
        Vec<Receipt>,
    ) {
        let db = tmp_db();
        let log = crate::audit::store::tests::tmp_log();
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        let mut all = Vec::new();
        for i in 0..N {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        ((db, log), store, all)
    }

    /// Every page of `q`, checked against brute force.
    pub(super) fn check(store: &AuditStore, all: &[Receipt], q: &Query) -> usize {
        let mut expect: Vec<&Receipt> = all.iter().filter(|r| matches(r, q)).collect();
        expect.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
        let expect: Vec<&str> = expect.iter().map(|r| r.id.as_str()).collect();
        let mut got = Vec::new();
        let mut q = q.clone();
        q.limit = 7;
        loop {
            let page = store.search(&q).unwrap();
            assert!(page.receipts.len() <= 7);
            assert!(page.scanned >= page.receipts.len());
            got.extend(page.receipts.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expect, "query {q:?}");
        got.len()
    }

    pub(super) fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[tokio::test]
    async fn every_filter_alone_and_combined() {
        let (_db, store, all) = store().await;
        let singles = [
            Query {
                user: s("u1"),
                ..Default::default()
            },
            Query {
                agent: s("a2"),
                ..Default::default()
            },
            Query {
                instance: s("in3"),
                ..Default::default()
            },
            Query {
                tool: s("t4"),
                ..Default::default()
            },
            Query {
                method: s("tools/list"),
                ..Default::default()
            },
            Query {
                enforcer_session: s("es5"),
                ..Default::default()
            },
            Query {
                protocol_session: s("ps4"),
                ..Default::default()
            },
            Query {
                status: s("s0"),
                ..Default::default()
            },
            Query {
                connector: s("c1"),
                ..Default::default()
            },
        ];
        for q in &singles {
            assert!(check(&store, &all, q) > 0, "{q:?} found nothing");
        }
        assert_eq!(check(&store, &all, &Query::default()), N as usize);
        let combos = [
            Query {
                agent: s("a1"),
                tool: s("t3"),
                ..Default::default()
            },
            Query {
                tool: s("t2"),
                status: s("s1"),
                connector: s("c0"),
                ..Default::default()
            },
            Query {
                user: s("u0"),
                method: s("tools/call"),
                instance: s("in2"),
                ..Default::default()
            },
            Query {
                enforcer_session: s("es0"),
                protocol_session: s("ps0"),
                ..Default::default()
            },
        ];
        for q in &combos {
            assert!(check(&store, &all, q) > 0, "{q:?} found nothing");
        }
        // AND of disjoint values, unknown values, and tool on non-tools/call receipts.
        let none = [
            Query {
                agent: s("a0"),
                user: s("u1"),
                instance: s("in0"),
                tool: s("t0"),
                status: s("s0"),
                ..Default::default()
            },
            Query {
                agent: s("nobody"),
                ..Default::default()
            },
            Query {
                tool: s("t0"),
                method: s("tools/list"),
                ..Default::default()
            },
        ];
        for q in &none {
            assert_eq!(check(&store, &all, q), 0, "{q:?}");
        }
    }

    #[tokio::test]
    async fn time_windows() {
        let (_db, store, all) = store().await;
        let w = |since: Option<u64>, until: Option<u64>| Query {
            since,
            until,
            ..Default::default()
        };
        assert_eq!(
            check(&store, &all, &w(Some(BASE + 10_000), Some(BASE + 19_000))),
            10
        );
        assert_eq!(
            check(&store, &all, &w(Some(BASE + 10_001), Some(BASE + 19_000))),
            9
        );
        assert_eq!(check(&store, &all, &w(None, Some(BASE + 4_000))), 5);
        assert_eq!(check(&store, &all, &w(Some(BASE + 115_000), None)), 5);
        assert_eq!(
            check(&store, &all, &w(Some(BASE + 20_000), Some(BASE + 10_000))),
            0
        );
        let q = Query {
            agent: s("a1"),
            tool: s("t1"),
            since: Some(BASE + 30_000),
            until: Some(BASE + 100_000),
            ..Default::default()
        };
        check(&store, &all, &q);
        let q = Query {
            status: s("s2"),
            until: Some(BASE + 60_000),
            ..Default::default()
        };
        assert!(check(&store, &all, &q) > 0);
    }

    #[tokio::test]
    async fn pagination_is_stable_while_appending() {
        let (_db, store, all) = store().await;
        let before: Vec<String> = {
            let mut v: Vec<&Receipt> = all.iter().filter(|r| r.actor.agent == "a1").collect();
            v.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
            v.iter().map(|r| r.id.clone()).collect()
        };
        let mut q = Query {
            agent: s("a1"),
            limit: 4,
            ..Default::default()
        };
        let mut got = Vec::new();
        let mut extra = 0u64;
        loop {
            let page = store.search(&q).unwrap();
            got.extend(page.receipts.into_iter().map(|r| r.id));
            // New receipts between pages: newer ones, and an old-timed one (long call).
            for t in [BASE + 500_000, BASE + 500] {
                let mut r = synthetic(1);
                r.time_ns = t + extra;
                extra += 1;
                store.append(r).await.unwrap();
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let set: HashSet<&String> = got.iter().collect();
        assert_eq!(set.len(), got.len(), "duplicates across pages");
        for id in &before {
            assert!(set.contains(id), "{id} skipped");
        }
        // The pre-existing receipts came in order.
        let old: Vec<&String> = got.iter().filter(|id| before.contains(id)).collect();
        assert_eq!(old, before.iter().collect::<Vec<_>>());
        assert!(store
            .search(&Query {
                cursor: s("nonsense"),
                ..Default::default()
            })
            .is_err());
    }

    #[tokio::test]
    async fn replay_in_chain_order() {
        let (_db, store, all) = store().await;
        let es: Vec<u64> = store.replay("es3").unwrap().iter().map(|r| r.seq).collect();
        let expect: Vec<u64> = all
            .iter()
            .filter(|r| r.session.enforcer_session == "es3")
            .map(|r| r.seq)
            .collect();
        assert_eq!(es, expect);
        assert!(es.windows(2).all(|w| w[0] < w[1]));
        let ps: Vec<u64> = store.replay("ps2").unwrap().iter().map(|r| r.seq).collect();
        let expect: Vec<u64> = all
            .iter()
            .filter(|r| r.session.protocol_session_id.as_deref() == Some("ps2"))
            .map(|r| r.seq)
            .collect();
        assert!(!expect.is_empty());
        assert_eq!(ps, expect);
        assert!(store.replay("no-such-session").unwrap().is_empty());
        assert!(store.replay("").unwrap().is_empty());
    }
}

#[cfg(test)]
mod lag_tests {
    //! Search, pagination and replay while the indexes are being rebuilt after a start.
    use super::tests::{check, s, synthetic, BASE, N};
    use super::*;
    use crate::audit::durability::Durability;
    use crate::audit::store::{
        tests::{tmp_db, tmp_log},
        AuditStore, Tuning,
    };
    use std::collections::HashSet;
    use std::time::Duration;

    fn paused(db: &sled::Db, log: &std::path::Path) -> AuditStore {
        AuditStore::open_tuned(
            db,
            log,
            Durability::default(),
            Tuning {
                indexer_paused: true,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn queries() -> Vec<Query> {
        vec![
            Query::default(),
            Query {
                agent: s("a1"),
                ..Default::default()
            },
            Query {
                tool: s("t2"),
                status: s("s1"),
                ..Default::default()
            },
            Query {
                enforcer_session: s("es0"),
                protocol_session: s("ps0"),
                ..Default::default()
            },
            Query {
                user: s("u0"),
                since: Some(BASE + 30_000),
                until: Some(BASE + 100_000),
                ..Default::default()
            },
            Query {
                agent: s("nobody"),
                ..Default::default()
            },
        ]
    }

    fn check_all(store: &AuditStore, all: &[Receipt]) {
        for q in queries() {
            check(store, all, &q);
        }
        for session in ["es3", "ps2", "es0"] {
            let got: Vec<u64> = store
                .replay(session)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            let expect: Vec<u64> = all
                .iter()
                .filter(|r| {
                    r.session.enforcer_session == session
                        || r.session.protocol_session_id.as_deref() == Some(session)
                })
                .map(|r| r.seq)
                .collect();
            assert_eq!(got, expect, "replay {session}");
        }
    }

    /// A store holding `first` receipts in its log, reopened with the rebuild paused.
    async fn reopened_paused(
        db: &sled::Db,
        log: &std::path::Path,
        first: std::ops::Range<u64>,
    ) -> (AuditStore, Vec<Receipt>) {
        let mut all = Vec::new();
        {
            let store = AuditStore::open(db, log, Durability::default()).unwrap();
            for i in first {
                all.push(store.append(synthetic(i)).await.unwrap());
            }
            // Indexed as appended.
            assert_eq!(store.indexed_upto(), all.len() as u64);
            check_all(&store, &all);
        }
        (paused(db, log), all)
    }

    #[tokio::test]
    async fn search_is_complete_while_the_rebuild_runs() {
        let db = tmp_db();
        let log = tmp_log();
        let (store, mut all) = reopened_paused(&db, &log, 0..N).await;
        // Nothing rebuilt yet: the old receipts come from reading the log.
        assert_eq!(store.indexed_upto(), 0);
        check_all(&store, &all);
        // New receipts are indexed as they are appended, beside the unindexed old ones.
        for i in N..N + 20 {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        check_all(&store, &all);
        store.set_indexer_paused(false);
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        assert_eq!(store.indexed_upto(), N + 20);
        check_all(&store, &all);
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, N + 20);
    }

    #[tokio::test]
    async fn pagination_across_the_indexed_boundary() {
        let db = tmp_db();
        let log = tmp_log();
        // First half in the log when the store opens (not rebuilt yet), second half appended
        // (indexed): pages (limit 9) straddle the two sources, and times are not in seq order
        // so both interleave on every page.
        let (store, mut all) = reopened_paused(&db, &log, 0..N / 2).await;
        for i in N / 2..N {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        assert_eq!(store.indexed_upto(), 0);
        check_all(&store, &all);

        // The boundary moves between pages: no duplicates, no skips, same order.
        let mut q = Query {
            limit: 9,
            ..Default::default()
        };
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.search(&q).unwrap();
            got.extend(page.receipts.into_iter().map(|r| r.id));
            pages += 1;
            if pages == 3 {
                store.set_indexer_paused(false);
                assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let mut expect: Vec<&Receipt> = all.iter().collect();
        expect.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
        let expect: Vec<String> = expect.iter().map(|r| r.id.clone()).collect();
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len());
        assert_eq!(got, expect);
    }
}
