//! Receipt search over the secondary indexes, and session replay.
//!
//! Receipts above the indexer's mark (not indexed yet) are read from the chain and matched
//! directly, then merged with the indexed results in the same order (see `search`).
//!
//! Plan: every equality filter is a candidate index range (narrowed by `since`/`until` and the
//! cursor); each candidate is probed by counting up to [`PROBE_CAP`] keys and the smallest one
//! drives the scan (ties go to the statically more selective field; no filter = time index).
//! The driver is walked newest first; the other equality filters are checked by point lookups
//! of their index keys (same position), and only matching receipts are loaded.
//!
//! Order is newest first by (time_ns, seq). The cursor is the position of the last receipt
//! returned; the next page starts strictly below it, so appends (which land at new positions)
//! never shift or duplicate entries of later pages.

use std::collections::BTreeSet;

use super::error::{AuditError, Result};
use super::index::{decode_position, entry_key, field_prefix, position, range, time_prefix, Field};
use super::log::ReceiptLog;
use super::receipt::Receipt;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// Keys counted per candidate index when choosing the driver.
pub const PROBE_CAP: usize = 128;

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
    /// Index entries walked by the driving index.
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

/// Runs `q` against the receipts chain: through the indexes for receipts with seq <=
/// `indexed` (the indexer's mark), and by reading the records above the mark directly; the
/// two are merged newest first by (time_ns, seq).
pub fn search(
    log: &ReceiptLog<Receipt>,
    index: &sled::Tree,
    indexed: u64,
    q: &Query,
) -> Result<Page> {
    let limit = q.page_size();
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s > u {
            return Ok(Page::default());
        }
    }
    // Read after the mark: every seq in (indexed, head] is stored and visible.
    let head = log.len();
    let filters = q.filters();
    let mut page = Page::default();

    // Not yet indexed: match the records themselves.
    let mut hits: Vec<Receipt> = Vec::new();
    if head > indexed {
        for r in log.records_in(indexed + 1, head) {
            let r = r?;
            page.scanned += 1;
            if matches(&r, &filters, q, before) {
                hits.push(r);
            }
        }
        hits.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
        hits.truncate(limit);
    }
    search_indexed(
        log,
        index,
        indexed,
        q,
        &filters,
        before,
        limit,
        &mut page.scanned,
        &mut hits,
    )?;
    hits.sort_by_key(|r| std::cmp::Reverse((r.time_ns, r.seq)));
    if hits.len() >= limit {
        hits.truncate(limit);
        let last = &hits[limit - 1];
        page.next_cursor = Some(encode_cursor(last.time_ns, last.seq));
    }
    page.receipts = hits;
    Ok(page)
}

/// Appends to `out` up to `limit` matches among the indexed receipts (seq <= `indexed`),
/// newest first.
#[allow(clippy::too_many_arguments)]
fn search_indexed(
    log: &ReceiptLog<Receipt>,
    index: &sled::Tree,
    indexed: u64,
    q: &Query,
    filters: &[(Field, &str)],
    before: Option<(u64, u64)>,
    limit: usize,
    scanned: &mut usize,
    out: &mut Vec<Receipt>,
) -> Result<()> {
    if indexed == 0 {
        return Ok(());
    }
    let prefixes: Vec<Vec<u8>> = filters.iter().map(|(f, v)| field_prefix(*f, v)).collect();

    // Choose the driver: the candidate with the fewest keys in range (probe capped).
    let driver = if prefixes.is_empty() {
        None
    } else {
        let mut best = (usize::MAX, 0usize);
        for (i, p) in prefixes.iter().enumerate() {
            let n = index
                .range(range(p, q.since, q.until, before))
                .take(PROBE_CAP)
                .count();
            if n < best.0 {
                best = (n, i);
            }
            if n == 0 {
                return Ok(());
            }
        }
        Some(best.1)
    };
    let driver_prefix = match driver {
        Some(i) => prefixes[i].clone(),
        None => time_prefix(),
    };

    let mut found = 0;
    for kv in index
        .range(range(&driver_prefix, q.since, q.until, before))
        .rev()
    {
        let (k, _) = kv?;
        *scanned += 1;
        let Some((time_ns, seq)) = decode_position(&k) else {
            continue;
        };
        // Entries above the mark may be visible before the mark moves: the tail scan
        // covers those seqs.
        if seq > indexed {
            continue;
        }
        let mut all = true;
        for (i, p) in prefixes.iter().enumerate() {
            if Some(i) != driver && !index.contains_key(entry_key(p, time_ns, seq))? {
                all = false;
                break;
            }
        }
        if !all {
            continue;
        }
        // Re-check the record itself: a stale entry (e.g. a seq lost in a crash and reused)
        // must not produce a wrong hit.
        let Some(r) = log.get(seq)? else { continue };
        if r.time_ns != time_ns || !matches(&r, filters, q, before) {
            continue;
        }
        out.push(r);
        found += 1;
        if found == limit {
            break;
        }
    }
    Ok(())
}

/// All receipts of an enforcer session id or a protocol session id, in chain order: through
/// the indexes up to the indexer's mark `indexed`, and by reading the records above it.
pub fn replay(
    log: &ReceiptLog<Receipt>,
    index: &sled::Tree,
    indexed: u64,
    session: &str,
) -> Result<Vec<Receipt>> {
    if session.is_empty() {
        return Ok(Vec::new());
    }
    let head = log.len();
    let is_ours = |r: &Receipt| {
        r.session.enforcer_session == session
            || r.session.protocol_session_id.as_deref() == Some(session)
    };
    let mut seqs = BTreeSet::new();
    for field in [Field::EnforcerSession, Field::ProtocolSession] {
        for kv in index.scan_prefix(field_prefix(field, session)) {
            let (k, _) = kv?;
            if let Some((_, seq)) = decode_position(&k) {
                if seq <= indexed {
                    seqs.insert(seq);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some(r) = log.get(seq)? {
            if is_ours(&r) {
                out.push(r);
            }
        }
    }
    if head > indexed {
        for r in log.records_in(indexed + 1, head) {
            let r = r?;
            if is_ours(&r) {
                out.push(r);
            }
        }
    }
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
        r.actor.user = format!("u{}", i % 3);
        r.actor.agent = format!("a{}", i % 4);
        r.actor.instance = format!("in{}", i % 5);
        r.request = Some(RequestInfo {
            method: if i.is_multiple_of(6) {
                "tools/list"
            } else {
                "tools/call"
            }
            .into(),
            target: Some(format!("t{}", i % 7)),
            ..Default::default()
        });
        r.session.enforcer_session = format!("es{}", i % 8);
        r.session.protocol_session_id = i.is_multiple_of(2).then(|| format!("ps{}", i % 9));
        r.outcome.status = format!("s{}", i % 5);
        r.connector.connector = format!("c{}", i % 2);
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
    //! Search, pagination and replay while the background indexer lags, and re-indexing.
    use super::tests::{check, s, synthetic, BASE, N};
    use super::*;
    use crate::audit::durability::Durability;
    use crate::audit::index::{time_prefix, INDEX_NS, MARK_KEY};
    use crate::audit::store::{
        tests::{tmp_db, tmp_log},
        AuditStore, Tuning, RECEIPTS_TREE,
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

    #[tokio::test]
    async fn search_is_complete_while_the_indexer_lags() {
        let db = tmp_db();
        let log = tmp_log();
        let store = paused(&db, &log);
        let mut all = Vec::new();
        for i in 0..N {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        // Nothing indexed: everything comes from the tail scan.
        assert_eq!(store.indexed_upto(), 0);
        check_all(&store, &all);
        assert!(store.verify().unwrap().is_ok());
        // Fully indexed: same answers from the indexes.
        store.set_indexer_paused(false);
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        assert_eq!(store.indexed_upto(), N);
        check_all(&store, &all);
        let report = store.verify().unwrap();
        assert!(
            report.is_ok(),
            "index keys and mark are not chain keys: {report}"
        );
        assert_eq!(report.checked, N);
    }

    #[tokio::test]
    async fn pagination_across_the_indexed_boundary() {
        let db = tmp_db();
        let log = tmp_log();
        let store = paused(&db, &log);
        let mut all = Vec::new();
        // First half indexed, second half not: pages (limit 7) straddle the boundary, and
        // times are not in seq order so both sources interleave on every page.
        for i in 0..N / 2 {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        store.set_indexer_paused(false);
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        store.set_indexer_paused(true);
        for i in N / 2..N {
            all.push(store.append(synthetic(i)).await.unwrap());
        }
        assert_eq!(store.indexed_upto(), N / 2);
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

    fn index_entries(db: &sled::Db) -> usize {
        db.open_tree(RECEIPTS_TREE)
            .unwrap()
            .scan_prefix(time_prefix())
            .count()
    }

    #[tokio::test]
    async fn reopen_reindexes_from_a_stale_mark() {
        let db = tmp_db();
        let log = tmp_log();
        let mut all = Vec::new();
        {
            let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
            for i in 0..N {
                all.push(store.append(synthetic(i)).await.unwrap());
            }
            assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        }
        // Simulate a crash that lost the index batches above seq 40 (but not the records).
        let tree = db.open_tree(RECEIPTS_TREE).unwrap();
        let stale: Vec<sled::IVec> = tree
            .scan_prefix(INDEX_NS)
            .keys()
            .map(|k| k.unwrap())
            .filter(|k| k.as_ref() != MARK_KEY)
            .filter(|k| decode_position(k).unwrap().1 > 40)
            .collect();
        assert!(!stale.is_empty());
        for k in stale {
            tree.remove(k).unwrap();
        }
        tree.insert(MARK_KEY, &40u64.to_be_bytes()[..]).unwrap();
        assert_eq!(index_entries(&db), 40);
        {
            let store = paused(&db, &log);
            assert_eq!(store.indexed_upto(), 40);
            // Complete before the re-index, from the tail scan.
            check_all(&store, &all);
            store.set_indexer_paused(false);
            assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
            assert_eq!(index_entries(&db), N as usize);
            check_all(&store, &all);
            // The chain continues and the new receipts are indexed too.
            all.push(store.append(synthetic(N)).await.unwrap());
            assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
            check_all(&store, &all);
            assert!(store.verify().unwrap().is_ok());
        }
        // A mark beyond the head (tampered) is clamped; a missing mark means indexing again
        // from the start, and search stays complete meanwhile.
        tree.insert(MARK_KEY, &10_000u64.to_be_bytes()[..]).unwrap();
        {
            let store = paused(&db, &log);
            assert_eq!(store.indexed_upto(), N + 1);
        }
        tree.remove(MARK_KEY).unwrap();
        {
            let store = paused(&db, &log);
            assert_eq!(store.indexed_upto(), 0);
            check_all(&store, &all);
        }
        // Idempotent: a full re-index from 0 changes nothing.
        tree.insert(MARK_KEY, &0u64.to_be_bytes()[..]).unwrap();
        let store = AuditStore::open(&db, &log, Durability::default()).unwrap();
        assert!(store.wait_indexed(Duration::from_secs(10)).unwrap());
        assert_eq!(index_entries(&db), N as usize + 1);
        check_all(&store, &all);
    }
}
