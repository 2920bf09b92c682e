//! A generic append-only, hash-chained log over one sled `Tree`.
//!
//! Layout of the tree:
//! * key = seq as big-endian u64 (8 bytes), value = JSON
//!   `{"seq": n, "prev_hash": hex, "hash": hex, "record": {...}}`;
//! * key [`HEAD_KEY`] (not 8 bytes long, so never a seq key), value = JSON `{"seq": n, "hash": hex}`
//!   naming the newest record, so removing the newest record is detected too.
//!
//! `hash = sha256(prev_hash || canonical JSON of the record)`, the record including its `seq`
//! (and id). The first record (seq 1) has `prev_hash` = 64 zeros.
//!
//! Appends are serialized by one mutex (the chain never forks); a record, its head update and
//! the caller's secondary-index keys are applied atomically, so after a crash either all or
//! none of them exist. The secondary keys live either in the chain tree itself under a reserved
//! key prefix (`Chain::open_shared`: one `apply_batch`; the receipts store's layout before
//! the receipts log, now only built by tests) or in a separate side tree ([`Chain::open`] with `Some(tree)`: a two-tree sled
//! transaction, slower).
//!
//! [`PreparedRecord`] lets callers do the expensive part of an append (serialization to
//! canonical JSON) before taking the writer lock; the writer only splices in `id` and `seq`,
//! hashes and writes.

use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sled::transaction::{TransactionError, Transactional};
use sled::{Batch, Tree};

use super::canonical::{
    canonical_json, canonical_json_with_slots, chain_hash, parse_hash, GENESIS,
};
use super::error::{AuditError, Result};

/// Key of the head record inside the chain tree.
pub const HEAD_KEY: &[u8] = b"~head";

/// Most problems listed one by one for a single gap; the rest are summarized.
const MAX_GAP_ITEMS: u64 = 100;

/// A record kept in a chain: it carries its own position and id, which the chain assigns.
pub trait ChainRecord: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The id the chain gives the record at `seq` (also used to name removed records).
    fn id_for(seq: u64) -> String;
    /// Sets seq and id (`id_for(seq)`).
    fn assign(&mut self, seq: u64) {
        self.set_seq_and_id(seq, Self::id_for(seq));
    }
    fn set_seq_and_id(&mut self, seq: u64, id: String);
    /// A faster path to [`PreparedRecord::new`]'s bytes, when the record has one: its
    /// canonical JSON with `id` = "" and `seq` = 0, and the byte ranges of those two values.
    #[allow(clippy::type_complexity)]
    fn canonical_with_slots(&self) -> Option<Result<(Vec<u8>, (usize, usize), (usize, usize))>> {
        None
    }
}

/// The stored wrapper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry<R> {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub record: R,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Seq of the newest record; 0 for an empty chain.
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
}

mod hex_hash {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hash(&s).ok_or_else(|| D::Error::custom("bad hash"))
    }
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Content does not match its hash (or its successor's / the head's link to it).
    Changed,
    /// A seq is missing (gap in the middle, or below the head).
    Removed,
    /// A record is stored under the wrong key, or its chain link is broken out of order.
    Reordered,
    /// A record beyond the head, or a key that is not a seq.
    Inserted,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Changed => "changed",
            ProblemKind::Removed => "removed",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Inserted => "inserted",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The seq (key) concerned; 0 for a key that is not a seq.
    pub seq: u64,
    /// The id the chain gives that seq.
    pub id: String,
    pub kind: ProblemKind,
    pub detail: String,
}

impl Problem {
    /// A problem with the record at `seq` (0: not a record's position).
    pub fn at<R: ChainRecord>(seq: u64, kind: ProblemKind, detail: String) -> Self {
        Problem {
            seq,
            id: if seq == 0 {
                String::new()
            } else {
                R::id_for(seq)
            },
            kind,
            detail,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records walked.
    pub checked: u64,
    /// Head as stored when the walk started.
    pub head_seq: u64,
    pub head_hash: String,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} records, head seq {} hash {}: {}",
            self.checked,
            self.head_seq,
            self.head_hash,
            if self.is_ok() { "OK" } else { "PROBLEMS" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {} seq {} ({}): {}", p.kind, p.seq, p.id, p.detail)?;
        }
        Ok(())
    }
}

/// Stored entry with the record left as JSON, for verification (of the sled chain and of
/// the receipts log, which store the same entries).
#[derive(Deserialize)]
pub(crate) struct RawEntry {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub record: Value,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    seq: u64,
    prev_hash: String,
    hash: String,
    record: &'a Value,
}

/// Where the secondary keys given to appends go.
enum Side {
    None,
    /// A separate tree, written in a two-tree transaction.
    Tree(Tree),
    /// The chain tree itself; every secondary key starts with this prefix, which the chain
    /// reserves (verify skips it). The receipts store's layout before the receipts log: kept
    /// to build such stores in the migration tests.
    #[cfg(test)]
    Shared(Vec<u8>),
}

/// A record serialized to canonical JSON ahead of the append, with slots for `id` and `seq`,
/// plus its secondary keys whose last 8 bytes are a placeholder for the seq (big-endian),
/// filled in by [`Chain::append_prepared`].
#[derive(Debug, PartialEq, Eq)]
pub struct PreparedRecord {
    canon: Vec<u8>,
    id_slot: (usize, usize),
    seq_slot: (usize, usize),
}

impl PreparedRecord {
    /// Serializes `record` (its current seq and id are ignored). The record must serialize to
    /// an object with top-level `id` and `seq` fields (`Receipt` does). Each side key must be
    /// at least 8 bytes long; its last 8 bytes are overwritten with the assigned seq.
    pub fn new<R: ChainRecord>(record: &R) -> Result<Self> {
        match record.canonical_with_slots() {
            Some(fast) => {
                let (canon, id_slot, seq_slot) = fast?;
                Ok(PreparedRecord {
                    canon,
                    id_slot,
                    seq_slot,
                })
            }
            None => Self::generic(record),
        }
    }

    /// Through a `serde_json::Value`: for any record.
    pub fn generic<R: ChainRecord>(record: &R) -> Result<Self> {
        let mut v = serde_json::to_value(record)?;
        let Value::Object(map) = &mut v else {
            return Err(AuditError::Corrupt("record is not a JSON object".into()));
        };
        if !(map.contains_key("id") && map.contains_key("seq")) {
            return Err(AuditError::Corrupt(
                "record has no top-level id and seq".into(),
            ));
        }
        map.insert("id".into(), Value::String(String::new()));
        map.insert("seq".into(), Value::from(0u64));
        let (canon, [id_slot, seq_slot]) = canonical_json_with_slots(&v, ["id", "seq"]);
        let (Some(id_slot), Some(seq_slot)) = (id_slot, seq_slot) else {
            return Err(AuditError::Corrupt("record slots not found".into()));
        };
        if id_slot.1 > seq_slot.0 {
            // Keys are sorted and "id" < "seq".
            return Err(AuditError::Corrupt("record slots out of order".into()));
        }
        Ok(PreparedRecord {
            canon,
            id_slot,
            seq_slot,
        })
    }

    /// Appends the stored entry bytes of the record at `seq` linked to `prev` to `out`;
    /// returns its hash.
    pub fn write_entry(
        &self,
        seq: u64,
        id: &str,
        prev: &[u8; 32],
        out: &mut Vec<u8>,
    ) -> Result<[u8; 32]> {
        let id_json = serde_json::to_vec(id)?;
        let mut seq_buf = [0u8; 20];
        let seq_len = {
            let mut c = std::io::Cursor::new(&mut seq_buf[..]);
            write!(c, "{seq}").expect("u64 fits in 20 bytes");
            c.position() as usize
        };
        let parts: [&[u8]; 5] = [
            &self.canon[..self.id_slot.0],
            &id_json,
            &self.canon[self.id_slot.1..self.seq_slot.0],
            &seq_buf[..seq_len],
            &self.canon[self.seq_slot.1..],
        ];
        let mut h = Sha256::new();
        h.update(prev);
        for p in parts {
            h.update(p);
        }
        let hash: [u8; 32] = h.finalize().into();
        let mut hex_buf = [0u8; 64];
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(&seq_buf[..seq_len]);
        out.extend_from_slice(b",\"prev_hash\":\"");
        hex::encode_to_slice(prev, &mut hex_buf).expect("64 hex digits");
        out.extend_from_slice(&hex_buf);
        out.extend_from_slice(b"\",\"hash\":\"");
        hex::encode_to_slice(hash, &mut hex_buf).expect("64 hex digits");
        out.extend_from_slice(&hex_buf);
        out.extend_from_slice(b"\",\"record\":");
        for p in parts {
            out.extend_from_slice(p);
        }
        out.push(b'}');
        Ok(hash)
    }
}

pub struct Chain<R> {
    tree: Tree,
    side: Side,
    /// The writer lock and the cached head.
    head: Mutex<Head>,
    _record: PhantomData<fn() -> R>,
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The first key after every key starting with `prefix` (None: no such key).
#[cfg(test)]
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_head(tree: &Tree) -> Result<Option<Head>> {
    match tree.get(HEAD_KEY)? {
        Some(v) => {
            Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                AuditError::Corrupt(format!("head record: {e}"))
            })?))
        }
        None => Ok(None),
    }
}

impl<R: ChainRecord> Chain<R> {
    /// Opens the chain in `tree`. `side` receives the secondary keys given to the appends, in
    /// the same transaction as the records.
    ///
    /// The chain continues after the newest of (stored head, last seq key), so a seq is never
    /// reused even if the head was tampered with (verify reports that).
    pub fn open(tree: Tree, side: Option<Tree>) -> Result<Self> {
        Self::open_inner(tree, side.map_or(Side::None, Side::Tree))
    }

    /// Opens the chain in `tree`, with the secondary keys in the same tree: every side key
    /// given to the appends must start with `side_prefix`, a prefix no seq key or the head key
    /// can start with (i.e. not 0x00 and not `~`). Appends are then a single `apply_batch`.
    #[cfg(test)]
    pub fn open_shared(tree: Tree, side_prefix: Vec<u8>) -> Result<Self> {
        if side_prefix.is_empty() || side_prefix[0] == 0 || side_prefix.starts_with(b"~") {
            return Err(AuditError::Corrupt(format!(
                "invalid side prefix {}",
                hex::encode(&side_prefix)
            )));
        }
        Self::open_inner(tree, Side::Shared(side_prefix))
    }

    fn open_inner(tree: Tree, side: Side) -> Result<Self> {
        let stored = read_head(&tree)?;
        // Keys sort bytewise; seq keys start with 0x00 for any realistic seq (< 2^56), so the
        // last key below 0x01 is the newest seq key (or a foreign key, ignored here).
        let last = match tree.range(..[1u8].as_ref()).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                if k.len() == 8 {
                    let seq = u64::from_be_bytes(k.as_ref().try_into().expect("8 bytes"));
                    let raw: Option<RawEntry> = serde_json::from_slice(&v).ok();
                    raw.and_then(|r| parse_hash(&r.hash).map(|h| Head { seq, hash: h }))
                } else {
                    None
                }
            }
            None => None,
        };
        let head = match (stored, last) {
            (Some(h), Some(l)) if l.seq > h.seq => l,
            (Some(h), _) => h,
            (None, Some(l)) => l,
            (None, None) => Head {
                seq: 0,
                hash: GENESIS,
            },
        };
        Ok(Chain {
            tree,
            side,
            head: Mutex::new(head),
            _record: PhantomData,
        })
    }

    #[cfg(test)]
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Head as cached by the writer (seq 0 = empty).
    pub fn head(&self) -> Result<Head> {
        Ok(*self.head.lock()?)
    }

    /// Number of records appended (the head seq).
    pub fn len(&self) -> Result<u64> {
        Ok(self.head()?.seq)
    }

    /// Appends one record; see [`Chain::append_batch`].
    pub fn append<F>(&self, record: R, side_keys: F) -> Result<R>
    where
        F: Fn(&R) -> Vec<Vec<u8>>,
    {
        let mut out = self.append_batch(vec![record], side_keys)?;
        Ok(out.pop().expect("one record in, one out"))
    }

    /// Appends records in order, assigning seq and id, atomically together with the secondary
    /// keys `side_keys(record)` (empty values). Returns the records as stored. On error
    /// nothing was appended and the head is unchanged.
    pub fn append_batch<F>(&self, records: Vec<R>, side_keys: F) -> Result<Vec<R>>
    where
        F: Fn(&R) -> Vec<Vec<u8>>,
    {
        let mut head = self.head.lock()?;
        let mut seq = head.seq;
        let mut prev = head.hash;
        let mut main = Batch::default();
        let mut side = Batch::default();
        let mut out = Vec::with_capacity(records.len());
        for mut record in records {
            seq += 1;
            record.assign(seq);
            let value = serde_json::to_value(&record)?;
            let canonical = canonical_json(&value);
            let hash = super::canonical::chain_hash_bytes(&prev, &canonical);
            let bytes = serde_json::to_vec(&EntryOut {
                seq,
                prev_hash: hex::encode(prev),
                hash: hex::encode(hash),
                record: &value,
            })?;
            main.insert(&seq_key(seq), bytes);
            for k in side_keys(&record) {
                match self.side {
                    #[cfg(test)]
                    Side::Shared(_) => main.insert(k, &[][..]),
                    _ => side.insert(k, &[][..]),
                }
            }
            prev = hash;
            out.push(record);
        }
        let new_head = Head { seq, hash: prev };
        self.commit(&mut head, main, side, new_head)?;
        Ok(out)
    }

    /// Writes a batch and its head (under the writer lock `head`), then advances the head.
    fn commit(&self, head: &mut Head, mut main: Batch, side: Batch, new_head: Head) -> Result<()> {
        main.insert(HEAD_KEY, serde_json::to_vec(&new_head)?);
        match &self.side {
            Side::None => self.tree.apply_batch(main)?,
            #[cfg(test)]
            Side::Shared(_) => self.tree.apply_batch(main)?,
            Side::Tree(side_tree) => (&self.tree, side_tree)
                .transaction(|(t, s)| {
                    t.apply_batch(&main)?;
                    s.apply_batch(&side)?;
                    Ok(())
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => AuditError::Storage(e),
                    TransactionError::Abort(()) => {
                        AuditError::Corrupt("transaction aborted".into())
                    }
                })?,
        }
        *head = new_head;
        Ok(())
    }

    /// The chain's own keys (records, head, foreign keys), skipping the shared side prefix.
    fn own_keys(
        &self,
    ) -> Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + '_> {
        match &self.side {
            #[cfg(test)]
            Side::Shared(p) => {
                let below = self.tree.range(..p.as_slice());
                match prefix_end(p) {
                    Some(end) => Box::new(below.chain(self.tree.range(end..))),
                    None => Box::new(below),
                }
            }
            _ => Box::new(self.tree.iter()),
        }
    }

    /// The record at `seq`, if stored.
    pub fn get(&self, seq: u64) -> Result<Option<R>> {
        match self.tree.get(seq_key(seq))? {
            Some(v) => {
                let e: Entry<R> = serde_json::from_slice(&v)?;
                Ok(Some(e.record))
            }
            None => Ok(None),
        }
    }

    /// Stored records with seq in `from..=to`, in chain order (missing seqs are skipped).
    pub fn records_in(&self, from: u64, to: u64) -> impl Iterator<Item = Result<R>> + '_ {
        let range = if from > to || from == 0 && to == 0 {
            self.tree.range(seq_key(1)..seq_key(1))
        } else {
            self.tree.range(seq_key(from.max(1))..=seq_key(to))
        };
        range.filter_map(|kv| match kv {
            Err(e) => Some(Err(e.into())),
            Ok((k, v)) if k.len() == 8 => Some(
                serde_json::from_slice::<Entry<R>>(&v)
                    .map(|e| e.record)
                    .map_err(Into::into),
            ),
            Ok(_) => None,
        })
    }

    /// All stored records in chain order (for small chains and tests).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = Result<R>> + '_ {
        self.own_keys().filter_map(|kv| match kv {
            Err(e) => Some(Err(e.into())),
            Ok((k, v)) if k.len() == 8 => Some(
                serde_json::from_slice::<Entry<R>>(&v)
                    .map(|e| e.record)
                    .map_err(Into::into),
            ),
            Ok(_) => None,
        })
    }

    /// Stored head, read under the writer lock so no append is half-applied.
    fn stored_head(&self) -> Result<Option<Head>> {
        let _writer = self.head.lock()?;
        read_head(&self.tree)
    }

    /// Walks the whole chain and reports every problem. Safe to run while appending: records
    /// appended during the walk are not reported as inserted.
    pub fn verify(&self) -> Result<VerifyReport> {
        let head_before = self.stored_head()?;
        let mut problems: Vec<Problem> = Vec::new();
        let mut push = |seq: u64, kind: ProblemKind, detail: String| {
            problems.push(Problem::at::<R>(seq, kind, detail))
        };
        // Previous walked record: (seq, stored hash, was it reported reordered/changed).
        let mut prev: Option<(u64, Option<[u8; 32]>, bool)> = None;
        let mut checked = 0u64;
        let mut beyond_head: Vec<u64> = Vec::new();
        let mut hash_at_head: Option<Option<[u8; 32]>> = None;
        let head_seq_before = head_before.map(|h| h.seq).unwrap_or(0);

        for kv in self.own_keys() {
            let (k, v) = kv?;
            if k.as_ref() == HEAD_KEY {
                continue;
            }
            if k.len() != 8 {
                push(
                    0,
                    ProblemKind::Inserted,
                    format!("foreign key {} in chain tree", hex::encode(&k)),
                );
                continue;
            }
            let seq = u64::from_be_bytes(k.as_ref().try_into().expect("8 bytes"));
            checked += 1;
            if seq > head_seq_before {
                beyond_head.push(seq);
            }
            let expected = prev.map(|p| p.0 + 1).unwrap_or(1);
            let gap = seq > expected;
            if gap {
                for s in expected..seq.min(expected + MAX_GAP_ITEMS) {
                    push(s, ProblemKind::Removed, "missing from the chain".into());
                }
                if seq - expected > MAX_GAP_ITEMS {
                    push(
                        expected + MAX_GAP_ITEMS,
                        ProblemKind::Removed,
                        format!(
                            "... and {} more up to seq {}",
                            seq - expected - MAX_GAP_ITEMS,
                            seq - 1
                        ),
                    );
                }
            }
            let raw: RawEntry = match serde_json::from_slice(&v) {
                Ok(r) => r,
                Err(e) => {
                    push(seq, ProblemKind::Changed, format!("unreadable entry: {e}"));
                    if Some(seq) == head_before.map(|h| h.seq) {
                        hash_at_head = Some(None);
                    }
                    prev = Some((seq, None, true));
                    continue;
                }
            };
            let stored_hash = parse_hash(&raw.hash);
            if Some(seq) == head_before.map(|h| h.seq) {
                hash_at_head = Some(stored_hash);
            }
            let record_seq = raw.record.get("seq").and_then(Value::as_u64);
            let mut flagged = false;
            if raw.seq != seq || record_seq != Some(seq) {
                push(
                    seq,
                    ProblemKind::Reordered,
                    format!(
                        "stored under seq {seq} but entry says seq {} (record seq {:?})",
                        raw.seq, record_seq
                    ),
                );
                flagged = true;
            }
            let prev_hash = parse_hash(&raw.prev_hash);
            let self_ok = match prev_hash {
                Some(ph) => Some(chain_hash(&ph, &raw.record)) == stored_hash,
                None => false,
            };
            if !self_ok && !flagged {
                push(
                    seq,
                    ProblemKind::Changed,
                    "content does not match its hash".into(),
                );
                flagged = true;
            }
            if !gap && !flagged {
                match prev {
                    None => {
                        if prev_hash != Some(GENESIS) {
                            push(
                                seq,
                                ProblemKind::Changed,
                                "first record does not start at genesis".into(),
                            );
                            flagged = true;
                        }
                    }
                    Some((pseq, phash, pflagged)) => {
                        if !pflagged && phash != prev_hash {
                            // This record is intact (its hash covers its prev_hash), so the
                            // predecessor was rewritten and re-hashed.
                            push(
                                pseq,
                                ProblemKind::Changed,
                                format!("re-hashed: successor seq {seq} links to a different hash"),
                            );
                        }
                    }
                }
            }
            prev = Some((seq, stored_hash, flagged));
        }

        let last_seq = prev.map(|p| p.0).unwrap_or(0);
        match head_before {
            None if checked > 0 => {
                push(last_seq, ProblemKind::Removed, "head record missing".into())
            }
            None => {}
            Some(h) => {
                if last_seq < h.seq {
                    for s in (last_seq + 1)..=h.seq.min(last_seq + MAX_GAP_ITEMS) {
                        push(
                            s,
                            ProblemKind::Removed,
                            "newest record(s) missing below the head".into(),
                        );
                    }
                } else if let Some(stored) = hash_at_head {
                    if stored != Some(h.hash) {
                        push(
                            h.seq,
                            ProblemKind::Changed,
                            "head hash does not match the record".into(),
                        );
                    }
                }
            }
        }
        if head_before.is_some() && !beyond_head.is_empty() {
            let head_after = self.stored_head()?.map(|h| h.seq).unwrap_or(0);
            for s in beyond_head.into_iter().filter(|s| *s > head_after) {
                push(
                    s,
                    ProblemKind::Inserted,
                    format!("beyond the head (seq {head_after})"),
                );
            }
        }
        // One line per (seq, kind); foreign keys (seq 0) are all kept.
        let mut seen = HashSet::new();
        problems.retain(|p| p.seq == 0 || seen.insert((p.seq, p.kind)));
        problems.sort_by_key(|p| (p.seq, p.kind));
        Ok(VerifyReport {
            checked,
            head_seq: head_seq_before,
            head_hash: head_before.map(|h| hex::encode(h.hash)).unwrap_or_default(),
            problems,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::receipt::Receipt;
    use crate::audit::store::tests::{full_receipt, tmp_db};

    /// The key namespace the receipts store of an older layout gave its index keys (records
    /// and index keys in one tree).
    pub(crate) const INDEX_NS: &[u8] = b"i";

    /// Side keys of a receipt in that layout's shape (prefix, value, position).
    pub(crate) fn index_keys(r: &Receipt) -> Vec<Vec<u8>> {
        ["u", "a", "t", "m", "s", "T"]
            .iter()
            .map(|tag| {
                [
                    INDEX_NS,
                    tag.as_bytes(),
                    r.actor.user.as_bytes(),
                    &r.time_ns.to_be_bytes(),
                    &r.seq.to_be_bytes(),
                ]
                .concat()
            })
            .collect()
    }

    /// A chain of `n` receipts in the old receipts store's layout (index keys in the same
    /// tree) and its db.
    fn chain(n: u64) -> (sled::Db, Chain<Receipt>) {
        let db = tmp_db();
        let c = Chain::open_shared(db.open_tree("c").unwrap(), INDEX_NS.to_vec()).unwrap();
        for i in 1..=n {
            assert_eq!(c.append(full_receipt(i), index_keys).unwrap().seq, i);
        }
        (db, c)
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"i"), Some(b"j".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }

    fn raw(c: &Chain<Receipt>, seq: u64) -> Value {
        serde_json::from_slice(&c.tree().get(seq_key(seq)).unwrap().unwrap()).unwrap()
    }

    fn put(c: &Chain<Receipt>, seq: u64, v: &Value) {
        c.tree()
            .insert(seq_key(seq), serde_json::to_vec(v).unwrap())
            .unwrap();
    }

    fn kinds(r: &VerifyReport) -> Vec<(u64, ProblemKind)> {
        r.problems.iter().map(|p| (p.seq, p.kind)).collect()
    }

    #[test]
    fn clean_chain_verifies_and_links() {
        let (_db, c) = chain(5);
        let r = c.verify().unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.checked, 5);
        assert_eq!(r.head_seq, 5);
        assert_eq!(raw(&c, 1)["prev_hash"], Value::String("0".repeat(64)));
        assert_eq!(raw(&c, 2)["prev_hash"], raw(&c, 1)["hash"]);
        assert_eq!(raw(&c, 3)["record"]["id"], "R000000000003");
    }

    #[test]
    fn detects_changed_record() {
        let (_db, c) = chain(5);
        let mut v = raw(&c, 3);
        v["record"]["outcome"]["status"] = "denied".into();
        put(&c, 3, &v);
        let r = c.verify().unwrap();
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Changed)], "{r}");
        assert_eq!(r.problems[0].id, "R000000000003");
    }

    #[test]
    fn detects_changed_and_rehashed_record() {
        let (_db, c) = chain(5);
        let mut v = raw(&c, 3);
        v["record"]["actor"]["user"] = "mallory".into();
        let prev = parse_hash(v["prev_hash"].as_str().unwrap()).unwrap();
        v["hash"] = hex::encode(chain_hash(&prev, &v["record"])).into();
        put(&c, 3, &v);
        let r = c.verify().unwrap();
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Changed)], "{r}");
    }

    #[test]
    fn detects_changed_newest_via_head() {
        let (_db, c) = chain(5);
        let mut v = raw(&c, 5);
        v["record"]["actor"]["user"] = "mallory".into();
        let prev = parse_hash(v["prev_hash"].as_str().unwrap()).unwrap();
        v["hash"] = hex::encode(chain_hash(&prev, &v["record"])).into();
        put(&c, 5, &v);
        let r = c.verify().unwrap();
        assert_eq!(kinds(&r), vec![(5, ProblemKind::Changed)], "{r}");
    }

    #[test]
    fn detects_removed_middle_and_newest() {
        let (_db, c) = chain(6);
        c.tree().remove(seq_key(3)).unwrap();
        let r = c.verify().unwrap();
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Removed)], "{r}");
        assert_eq!(r.problems[0].id, "R000000000003");

        c.tree().remove(seq_key(6)).unwrap();
        let r = c.verify().unwrap();
        assert_eq!(
            kinds(&r),
            vec![(3, ProblemKind::Removed), (6, ProblemKind::Removed)],
            "{r}"
        );
    }

    #[test]
    fn detects_removed_head_record() {
        let (_db, c) = chain(3);
        c.tree().remove(HEAD_KEY).unwrap();
        let r = c.verify().unwrap();
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Removed)], "{r}");
    }

    #[test]
    fn detects_reordered_records() {
        let (_db, c) = chain(5);
        let (a, b) = (raw(&c, 2), raw(&c, 3));
        put(&c, 2, &b);
        put(&c, 3, &a);
        let r = c.verify().unwrap();
        assert_eq!(
            kinds(&r),
            vec![(2, ProblemKind::Reordered), (3, ProblemKind::Reordered)],
            "{r}"
        );
    }

    #[test]
    fn detects_inserted_records() {
        let (_db, c) = chain(4);
        // A well-formed record appended behind the store's back (head not updated).
        let mut fake = full_receipt(99);
        fake.assign(5);
        let value = serde_json::to_value(&fake).unwrap();
        let prev = parse_hash(raw(&c, 4)["hash"].as_str().unwrap()).unwrap();
        let hash = chain_hash(&prev, &value);
        let entry = serde_json::json!({
            "seq": 5, "prev_hash": hex::encode(prev), "hash": hex::encode(hash), "record": value
        });
        put(&c, 5, &entry);
        // And keys that are not seqs, on both sides of the index namespace (keys inside it are
        // the index's, not checked by verify).
        c.tree().insert(b"junk", b"{}".to_vec()).unwrap();
        c.tree().insert(b"a-junk", b"{}".to_vec()).unwrap();
        c.tree().insert(b"i-index-like", b"".to_vec()).unwrap();
        let r = c.verify().unwrap();
        assert_eq!(
            kinds(&r),
            vec![
                (0, ProblemKind::Inserted),
                (0, ProblemKind::Inserted),
                (5, ProblemKind::Inserted)
            ],
            "{r}"
        );
        assert_eq!(r.problems[2].id, "R000000000005");
        assert_eq!(r.checked, 5);
    }

    #[test]
    fn reopen_continues_and_side_keys_are_written() {
        let db = tmp_db();
        let tree = db.open_tree("c").unwrap();
        let side = db.open_tree("s").unwrap();
        {
            let c: Chain<Receipt> = Chain::open(tree.clone(), Some(side.clone())).unwrap();
            let out = c
                .append_batch(vec![full_receipt(1), full_receipt(2)], index_keys)
                .unwrap();
            assert_eq!(out[1].seq, 2);
        }
        assert!(side.len() >= 2 * 6);
        let c: Chain<Receipt> = Chain::open(tree, Some(side)).unwrap();
        assert_eq!(c.len().unwrap(), 2);
        assert_eq!(c.append(full_receipt(3), index_keys).unwrap().seq, 3);
        assert!(c.verify().unwrap().is_ok());
        assert_eq!(c.iter().count(), 3);
    }
}
