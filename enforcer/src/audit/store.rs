//! The receipts store: chain + indexes + durability, shared as `Arc<AuditStore>` by the proxy.

use std::time::Duration;

use super::chain::{Chain, ChainRecord, VerifyReport};
use super::durability::{Durability, GroupCommit, WindowFlusher};
use super::error::{AuditError, Result};
use super::index::index_keys;
use super::receipt::Receipt;
use super::search::{self, Page, Query};

/// sled tree holding the receipts chain.
pub const RECEIPTS_TREE: &str = "audit.receipts";
/// sled tree holding the receipts' secondary indexes.
pub const RECEIPTS_INDEX_TREE: &str = "audit.receipts.idx";

impl ChainRecord for Receipt {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn id_for(seq: u64) -> String {
        format!("R{seq:012}")
    }
    fn set_seq_and_id(&mut self, seq: u64, id: String) {
        self.seq = seq;
        self.id = id;
    }
}

/// Parses "R000000000042" into 42.
pub fn parse_receipt_id(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('R')?;
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Counters for benchmarks and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub receipts: u64,
    pub flushes: u64,
}

pub struct AuditStore {
    db: sled::Db,
    chain: Chain<Receipt>,
    index: sled::Tree,
    durability: Durability,
    group: GroupCommit,
    flusher: Option<WindowFlusher>,
}

impl AuditStore {
    /// Opens (or creates) the receipts chain and its indexes in `db`.
    pub fn open(db: &sled::Db, durability: Durability) -> Result<Self> {
        let tree = db.open_tree(RECEIPTS_TREE)?;
        let index = db.open_tree(RECEIPTS_INDEX_TREE)?;
        let chain = Chain::open(tree, Some(index.clone()))?;
        let flusher = match durability {
            Durability::Strict => None,
            Durability::Window(w) => Some(WindowFlusher::start(
                db.clone(),
                w.max(Duration::from_millis(1)),
            )?),
        };
        Ok(AuditStore {
            db: db.clone(),
            chain,
            index,
            durability,
            group: GroupCommit::default(),
            flusher,
        })
    }

    /// Err while the store is known to be failing (a background flush failed): the proxy
    /// refuses calls rather than forward them unrecorded.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        match &self.flusher {
            Some(f) => f.check(),
            None => Ok(()),
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Appends one receipt; returns it with `id` and `seq` set. `Err` = not recorded (or, in
    /// Strict mode, not known to be on disk): the caller must refuse the call.
    pub async fn append(&self, receipt: Receipt) -> Result<Receipt, AuditError> {
        let mut out = self.append_batch(vec![receipt]).await?;
        Ok(out.pop().expect("one in, one out"))
    }

    /// Appends receipts in order in one transaction (one flush in Strict mode).
    pub async fn append_batch(&self, receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(receipts);
        }
        let out = self.insert(receipts)?;
        if self.durability == Durability::Strict {
            let last = out.last().map(|r| r.seq).unwrap_or(0);
            self.group
                .wait_durable(&self.db, last, || self.chain.len())
                .await?;
        }
        Ok(out)
    }

    /// The synchronous part of an append: chain + indexes in one sled transaction.
    fn insert(&self, receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        if let Some(f) = &self.flusher {
            f.check()?;
        }
        let out = self.chain.append_batch(receipts, index_keys)?;
        if let Some(f) = &self.flusher {
            f.mark_dirty();
        }
        Ok(out)
    }

    /// Flushes everything appended so far (e.g. at shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| AuditError::Flush(e.to_string()))
    }

    /// The receipt with this id ("R" + 12 digits).
    pub fn get(&self, id: &str) -> Result<Option<Receipt>> {
        let Some(seq) = parse_receipt_id(id) else {
            return Ok(None);
        };
        Ok(self.chain.get(seq)?.filter(|r| r.id == id))
    }

    /// Number of receipts appended.
    pub fn len(&self) -> Result<u64> {
        self.chain.len()
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.chain.is_empty()
    }

    /// Walks the chain (see `Chain::verify`). Runs synchronously; from async code use
    /// `spawn_blocking` on large stores.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.chain.verify()
    }

    /// See `search::search`. Synchronous (sled reads).
    pub fn search(&self, q: &Query) -> Result<Page> {
        search::search(&self.chain, &self.index, q)
    }

    /// All receipts of an enforcer or protocol session, in chain order.
    pub fn replay(&self, session: &str) -> Result<Vec<Receipt>> {
        search::replay(&self.chain, &self.index, session)
    }

    pub fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            receipts: self.len()?,
            flushes: self.group.flushes() + self.flusher.as_ref().map_or(0, |f| f.flushes()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::receipt::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A receipt with every field set.
    pub(crate) fn full_receipt(i: u64) -> Receipt {
        Receipt {
            id: String::new(),
            seq: 0,
            time_ns: 1_700_000_000_000_000_000 + i * 1_000_000,
            time: "2023-11-14T22:13:20Z".into(),
            kind: ReceiptKind::Exchange,
            request: Some(RequestInfo {
                jsonrpc_id: json!(i),
                method: "tools/call".into(),
                target: Some(format!("tool-{}", i % 3)),
                arguments_digest: Some("sha256:00ff".into()),
                arguments_redacted: Some(json!({"path": "/etc/[REDACTED]", "n": 1.5})),
                era: Some("session".into()),
                protocol_version: Some("2025-06-18".into()),
                http_method: "POST".into(),
            }),
            actor: ActorChain {
                user: "alice".into(),
                uid: 1000,
                agent: format!("agent-{}", i % 2),
                instance: "inst-1".into(),
                instance_id: 4242,
                pid: 77,
                surface: Surface {
                    exe: "/usr/bin/node".into(),
                    client: Some("claude-code 1.0".into()),
                    user_agent: Some("ua/1".into()),
                },
            },
            session: SessionRef {
                enforcer_session: "es-1".into(),
                client_flow: "cf-1".into(),
                backend_flow: Some("bf-1".into()),
                protocol_session_id: Some("ps-1".into()),
                state: "active".into(),
                idle_limit_ms: 60_000,
            },
            policy: Some(PolicyTicket {
                version: "v3".into(),
                version_hash: "sha256:ab".into(),
                environment: "prod".into(),
                decision: "allow".into(),
                rule: Some("r1".into()),
                reason_code: "matched".into(),
                note: Some("n".into()),
                shadow_decision: Some("deny".into()),
            }),
            credential: CredentialRef {
                mode: "inject".into(),
                binding: Some("gh@2".into()),
            },
            connector: ConnectorPath {
                connector: "github".into(),
                route: "r".into(),
                backend: "https://api".into(),
                route_status: RouteStatus {
                    state: "reachable".into(),
                    last_error: Some("e".into()),
                    last_latency_us: Some(12),
                },
            },
            outcome: Outcome {
                status: "ok".into(),
                http_status: Some(200),
                rpc_error_code: Some(-32000),
                error: Some("x".into()),
                latency_us: 1234,
                bytes_in: 10,
                bytes_out: 20,
                masking: BTreeMap::from([("email".to_string(), 2u32)]),
            },
            event: Some(ConnectionEvent {
                event: "tls_failure".into(),
                destination: Some("1.2.3.4:443".into()),
                sni: Some("x.example".into()),
                detail: Some("d".into()),
            }),
            recording: Some(json!({"content": [{"type": "text", "text": "[REDACTED]"}]})),
        }
    }

    pub(crate) fn tmp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    #[tokio::test]
    async fn append_assigns_ids_in_order_and_round_trips() {
        let db = tmp_db();
        let store = AuditStore::open(&db, Durability::default()).unwrap();
        for i in 1..=5u64 {
            let r = store.append(full_receipt(i)).await.unwrap();
            assert_eq!(r.seq, i);
            assert_eq!(r.id, format!("R{i:012}"));
            let mut expect = full_receipt(i);
            expect.seq = i;
            expect.id = r.id.clone();
            assert_eq!(r, expect);
            assert_eq!(store.get(&r.id).unwrap(), Some(expect));
        }
        assert_eq!(store.len().unwrap(), 5);
        assert_eq!(store.get("R000000000006").unwrap(), None);
        assert_eq!(store.get("bogus").unwrap(), None);
        assert!(store.verify().unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_give_a_valid_chain() {
        let db = tmp_db();
        let store = Arc::new(AuditStore::open(&db, Durability::Strict).unwrap());
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    seqs.push(s.append(full_receipt(t * 100 + i)).await.unwrap().seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let seqs = t.await.unwrap();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-task order");
            all.extend(seqs);
        }
        all.sort();
        assert_eq!(all, (1..=320).collect::<Vec<u64>>());
        let report = store.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, 320);
        let flushes = store.stats().unwrap().flushes;
        assert!((1..=320).contains(&flushes), "flushes {flushes}");
    }

    #[tokio::test]
    async fn strict_appends_survive_reopen_and_chain_continues() {
        let dir = std::env::temp_dir().join(format!("audit-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let db = sled::open(&dir).unwrap();
            let store = AuditStore::open(&db, Durability::Strict).unwrap();
            for i in 0..3 {
                store.append(full_receipt(i)).await.unwrap();
            }
            assert!(store.stats().unwrap().flushes >= 1, "strict append flushed");
        }
        {
            let db = sled::open(&dir).unwrap();
            assert!(db.was_recovered());
            let store = AuditStore::open(&db, Durability::Strict).unwrap();
            assert_eq!(store.len().unwrap(), 3);
            let r = store.append(full_receipt(9)).await.unwrap();
            assert_eq!(r.id, "R000000000004");
            let report = store.verify().unwrap();
            assert!(report.is_ok(), "{report}");
            assert_eq!(report.checked, 4);
            // Indexes survived too.
            assert_eq!(store.replay("es-1").unwrap().len(), 4);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn window_mode_flushes_in_background() {
        let db = tmp_db();
        let store = AuditStore::open(&db, Durability::Window(Duration::from_millis(10))).unwrap();
        store.append(full_receipt(1)).await.unwrap();
        let t = std::time::Instant::now();
        while store.stats().unwrap().flushes == 0 && t.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(store.stats().unwrap().flushes >= 1);
    }

    #[tokio::test]
    async fn unwritable_store_returns_error() {
        let db = tmp_db();
        let store = AuditStore::open(&db, Durability::Strict).unwrap();
        store.append(full_receipt(1)).await.unwrap();
        assert!(db.drop_tree(RECEIPTS_TREE).unwrap());
        let err = store.append(full_receipt(2)).await;
        assert!(err.is_err(), "append into a dropped tree must fail");
        // The failed append did not advance the chain.
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn receipt_ids_parse() {
        assert_eq!(parse_receipt_id("R000000000042"), Some(42));
        assert_eq!(parse_receipt_id("R42"), None);
        assert_eq!(parse_receipt_id("X000000000042"), None);
        assert_eq!(Receipt::id_for(7), "R000000000007");
    }
}
