//! The receipts chain on disk: append-only JSON-lines segment files.
//!
//! Layout of the directory (mode 0700, files 0600):
//! * `seg-<first seq, 20 digits>.jsonl`: one chain entry per line,
//!   `{"seq":n,"prev_hash":hex,"hash":hex,"record":{...}}` (the same entry the sled chain
//!   stores, so `audit verify` means the same thing), in seq order. A segment is sealed once
//!   it passes [`SEGMENT_BYTES`]; the next starts at the following seq.
//! * `seg-<...>.jsonl.ends`: for a sealed segment, the end offset of every line (u64 LE), so
//!   opening the log does not rescan sealed segments. Rebuilt by a scan when absent or stale.
//! * `HEAD`: `{"seq":n,"hash":hex}` of the newest record known to be on disk, replaced
//!   atomically by every checkpoint; verify compares it with the records, so removing the
//!   newest records (older than the last checkpoint) is detected.
//!
//! Why not sled: an append here is one `write(2)` of the entry to the end of a file, where a
//! sled insert of a 2 KB value costs a page-cache delta, node consolidation that rewrites
//! neighbouring values, and flushes by a pool of I/O threads (measured: more CPU than the
//! whole proxy's data path). The secondary indexes stay in sled (small keys, written off the
//! hot path by the indexer).
//!
//! Appends are serialized by one mutex (the chain never forks). Readers look up a record's
//! byte range in the in-memory offsets and `pread` it, concurrently with appends: only bytes
//! already written are ever read. Record seq = segment's first seq + line position.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use serde_json::Value;

use super::canonical::{chain_hash, parse_hash, GENESIS};
use super::chain::{
    ChainRecord, Entry, Head, PreparedRecord, Problem, ProblemKind, RawEntry, VerifyReport,
};
use super::error::{AuditError, Result};

/// A segment is sealed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes one read of a range of records takes at once.
const READ_CHUNK: u64 = 1024 * 1024;
/// Most problems listed one by one for a single gap; the rest are summarized.
const MAX_GAP_ITEMS: u64 = 100;
const HEAD_FILE: &str = "HEAD";

fn io(what: &str, path: &Path, e: std::io::Error) -> AuditError {
    AuditError::Io(format!("{what} {}: {e}", path.display()))
}

/// One segment file as readers see it.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// End offset of each line (its start is the previous end, or 0).
    ends: Vec<u64>,
}

impl Segment {
    fn range(&self, seq: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some((start, end))
    }

    fn last_seq(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }
}

/// The appending side.
struct Writer {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    head: Head,
    /// Reused buffer for the bytes of one batch.
    buf: Vec<u8>,
}

/// Just the link fields of an entry (reading the head at open).
#[derive(Deserialize)]
struct EntryLink {
    seq: u64,
    hash: String,
}

pub struct ReceiptLog<R> {
    dir: PathBuf,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Segment>>,
    /// Head seq, readable without the writer lock.
    len: AtomicU64,
    /// The last head written to `HEAD` (checkpoints skip when nothing changed).
    checkpointed: Mutex<Head>,
    /// Seal a segment past this size ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    _record: std::marker::PhantomData<fn() -> R>,
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Opened for appending (O_APPEND: every write lands at the end, whatever was cut off) and
/// for `pread`.
fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("cannot open", path, e))
}

/// End offsets of the complete lines of `file` (every line ends with '\n'), and the length of
/// an unterminated last fragment.
fn scan_lines(path: &Path) -> Result<(Vec<u64>, u64)> {
    let mut f = File::open(path).map_err(|e| io("cannot read", path, e))?;
    let mut ends = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut base = 0u64;
    let mut last_end = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            last_end = base + i as u64 + 1;
            ends.push(last_end);
        }
        base += n as u64;
    }
    Ok((ends, base - last_end))
}

/// The sidecar's offsets, if it matches the segment (same length, last end = file size).
fn read_ends(segment: &Path, len: u64) -> Option<Vec<u64>> {
    let bytes = std::fs::read(ends_path(segment)).ok()?;
    if bytes.len() % 8 != 0 {
        return None;
    }
    let ends: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    (ends.last().copied().unwrap_or(0) == len && ends.windows(2).all(|w| w[0] < w[1]))
        .then_some(ends)
}

fn ends_path(segment: &Path) -> PathBuf {
    let mut p = segment.as_os_str().to_owned();
    p.push(".ends");
    PathBuf::from(p)
}

fn write_ends(segment: &Path, ends: &[u64]) -> Result<()> {
    let path = ends_path(segment);
    let bytes: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
    std::fs::write(&path, bytes).map_err(|e| io("cannot write", &path, e))
}

fn read_at(file: &File, start: u64, end: u64, path: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| io("cannot read", path, e))?;
    Ok(buf)
}

impl<R: ChainRecord> ReceiptLog<R> {
    /// Opens (or creates) the log in `dir`. An unterminated last line (a write cut short by a
    /// crash or power loss) is cut off; everything else is kept as found, for verify to judge.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_sized(dir, SEGMENT_BYTES)
    }

    fn open_sized(dir: &Path, segment_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io("cannot list", dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_name(&e.file_name().to_string_lossy()))
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::with_capacity(firsts.len().max(1));
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = dir.join(segment_name(first));
            let last = i + 1 == firsts.len();
            let len = std::fs::metadata(&path)
                .map_err(|e| io("cannot read", &path, e))?
                .len();
            let ends = match (last, read_ends(&path, len)) {
                (false, Some(ends)) => ends,
                _ => {
                    let (ends, fragment) = scan_lines(&path)?;
                    if fragment > 0 {
                        if !last {
                            return Err(AuditError::Corrupt(format!(
                                "{} ends in the middle of a line although later segments exist",
                                path.display()
                            )));
                        }
                        tracing::warn!(
                            path = %path.display(),
                            bytes = fragment,
                            "receipts log: cutting off an unterminated last line (a write interrupted by a crash)"
                        );
                        let f = open_append(&path)?;
                        f.set_len(len - fragment)
                            .and_then(|_| f.sync_data())
                            .map_err(|e| io("cannot truncate", &path, e))?;
                    }
                    if !last {
                        write_ends(&path, &ends)?;
                    }
                    ends
                }
            };
            let file = Arc::new(open_append(&path)?);
            segments.push(Segment {
                first,
                path,
                file,
                ends,
            });
        }
        // Drop empty segments but the last (a crash right after a rotation).
        let head = Self::head_of(&segments)?;
        let next = head.seq + 1;
        let reuse_last = segments
            .last()
            .is_some_and(|s| s.first + s.ends.len() as u64 == next);
        if !reuse_last {
            // Empty log, or the last line's seq does not match its position (a tampered
            // log): continue in a new segment named by the next seq, so positions stay true
            // and no seq is ever reused.
            let path = dir.join(segment_name(next));
            let file = Arc::new(open_append(&path)?);
            if segments.last().is_some_and(|s| s.first == next) {
                segments.pop();
            }
            segments.push(Segment {
                first: next,
                path,
                file,
                ends: Vec::new(),
            });
        }
        let active = segments.last().expect("one segment");
        let writer = Writer {
            file: active.file.clone(),
            path: active.path.clone(),
            pos: active.ends.last().copied().unwrap_or(0),
            head,
            buf: Vec::with_capacity(64 * 1024),
        };
        let checkpointed = Self::read_head_file(dir)?.unwrap_or(Head {
            seq: 0,
            hash: GENESIS,
        });
        Ok(ReceiptLog {
            dir: dir.to_path_buf(),
            writer: Mutex::new(writer),
            segments: RwLock::new(segments),
            len: AtomicU64::new(head.seq),
            checkpointed: Mutex::new(checkpointed),
            segment_bytes,
            _record: std::marker::PhantomData,
        })
    }

    /// The newest entry's seq and hash (from the last line of the last non-empty segment).
    fn head_of(segments: &[Segment]) -> Result<Head> {
        let Some(seg) = segments.iter().rev().find(|s| !s.ends.is_empty()) else {
            return Ok(Head {
                seq: 0,
                hash: GENESIS,
            });
        };
        let last = seg.last_seq();
        let (start, end) = seg.range(last).expect("last line");
        let bytes = read_at(&seg.file, start, end, &seg.path)?;
        match serde_json::from_slice::<EntryLink>(&bytes) {
            Ok(l) => Ok(Head {
                seq: l.seq.max(last),
                hash: parse_hash(&l.hash).unwrap_or(GENESIS),
            }),
            Err(e) => {
                tracing::error!(
                    path = %seg.path.display(),
                    error = %e,
                    "receipts log: the last line is not a chain entry; the chain continues after it (audit verify reports it)"
                );
                Ok(Head {
                    seq: last,
                    hash: super::canonical::chain_hash_bytes(&GENESIS, &bytes),
                })
            }
        }
    }

    fn read_head_file(dir: &Path) -> Result<Option<Head>> {
        let path = dir.join(HEAD_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AuditError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path, e)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of records appended (the head seq).
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn head(&self) -> Result<Head> {
        Ok(self.writer.lock()?.head)
    }

    /// Appends prepared records in order; returns the seq of the first (the others follow).
    /// One `write(2)` for the whole batch. On error nothing is appended (a partial write is
    /// cut back) and the head is unchanged.
    pub fn append_prepared(&self, records: &[&PreparedRecord]) -> Result<u64> {
        let mut w = self.writer.lock()?;
        let w = &mut *w;
        let first = w.head.seq + 1;
        let mut seq = w.head.seq;
        let mut prev = w.head.hash;
        let mut ends = Vec::with_capacity(records.len());
        w.buf.clear();
        for rec in records {
            seq += 1;
            prev = rec.write_entry(seq, &R::id_for(seq), &prev, &mut w.buf)?;
            w.buf.push(b'\n');
            ends.push(w.pos + w.buf.len() as u64);
        }
        self.commit(w, ends, Head { seq, hash: prev })?;
        Ok(first)
    }

    /// Writes the batch in `w.buf` (lines ending at `ends`) in one `write(2)`, then makes it
    /// visible: offsets, head, length; seals the segment once it is full. On a failed write
    /// nothing is appended (a partial line is cut back) and the head is unchanged.
    fn commit(&self, w: &mut Writer, ends: Vec<u64>, head: Head) -> Result<()> {
        if let Err(e) = w.file.as_ref().write_all(&w.buf) {
            // Leave no partial line behind: the next append must start a line.
            let _ = w.file.set_len(w.pos);
            return Err(io("cannot append to", &w.path, e));
        }
        w.pos += w.buf.len() as u64;
        w.head = head;
        self.segments
            .write()?
            .last_mut()
            .expect("active segment")
            .ends
            .extend(ends);
        self.len.store(head.seq, Ordering::Release);
        if w.pos >= self.segment_bytes {
            self.rotate(w)?;
        }
        Ok(())
    }

    /// Seals the active segment (synced, offsets written) and starts the next.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        w.file
            .sync_data()
            .map_err(|e| io("cannot sync", &w.path, e))?;
        let next = w.head.seq + 1;
        let path = self.dir.join(segment_name(next));
        let file = Arc::new(open_append(&path)?);
        let mut segs = self.segments.write()?;
        if let Some(active) = segs.last() {
            write_ends(&active.path, &active.ends)?;
        }
        segs.push(Segment {
            first: next,
            path: path.clone(),
            file: file.clone(),
            ends: Vec::new(),
        });
        sync_dir(&self.dir)?;
        w.file = file;
        w.path = path;
        w.pos = 0;
        Ok(())
    }

    /// Everything appended so far is on disk when this returns (`fdatasync` of the active
    /// segment; sealed ones were synced when sealed). Appends go on meanwhile.
    pub fn sync(&self) -> Result<Head> {
        let (file, path, head) = {
            let w = self.writer.lock()?;
            (w.file.clone(), w.path.clone(), w.head)
        };
        file.sync_data().map_err(|e| io("cannot sync", &path, e))?;
        Ok(head)
    }

    /// [`sync`](Self::sync), then records the synced head in `HEAD` (atomically replaced) if
    /// it moved. Run by the background flusher.
    pub fn checkpoint(&self) -> Result<()> {
        let head = self.sync()?;
        let mut done = self.checkpointed.lock()?;
        if *done == head {
            return Ok(());
        }
        let tmp = self.dir.join("HEAD.tmp");
        let path = self.dir.join(HEAD_FILE);
        let bytes = serde_json::to_vec(&head)?;
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("cannot write", &tmp, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_data())
            .map_err(|e| io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", &path, e))?;
        sync_dir(&self.dir)?;
        *done = head;
        Ok(())
    }

    /// Bytes of the entry at `seq`, without its newline.
    fn raw(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let found = {
            let segs = self.segments.read()?;
            let i = segs.partition_point(|s| s.first <= seq);
            i.checked_sub(1)
                .and_then(|i| segs.get(i))
                .and_then(|s| Some((s.file.clone(), s.path.clone(), s.range(seq)?)))
        };
        let Some((file, path, (start, end))) = found else {
            return Ok(None);
        };
        let mut bytes = read_at(&file, start, end, &path)?;
        bytes.pop();
        Ok(Some(bytes))
    }

    /// The record at `seq`, if stored.
    pub fn get(&self, seq: u64) -> Result<Option<R>> {
        match self.raw(seq)? {
            Some(b) => Ok(Some(serde_json::from_slice::<Entry<R>>(&b)?.record)),
            None => Ok(None),
        }
    }

    /// Up to [`READ_CHUNK`] bytes of consecutive entries from `from` (at most up to `to`), in
    /// one read: (seq, bytes) pairs.
    fn chunk(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let found = {
            let segs = self.segments.read()?;
            let i = segs.partition_point(|s| s.first <= from);
            let Some(seg) = i.checked_sub(1).and_then(|i| segs.get(i)) else {
                return Ok(Vec::new());
            };
            let Some((start, _)) = seg.range(from) else {
                return Ok(Vec::new());
            };
            let last = to.min(seg.last_seq());
            let mut lines = Vec::new();
            let mut seq = from;
            while seq <= last {
                let (_, end) = seg.range(seq).expect("in range");
                if !lines.is_empty() && end - start > READ_CHUNK {
                    break;
                }
                lines.push(end - start);
                seq += 1;
            }
            (seg.file.clone(), seg.path.clone(), start, lines)
        };
        let (file, path, start, lines) = found;
        let Some(&total) = lines.last() else {
            return Ok(Vec::new());
        };
        let bytes = read_at(&file, start, start + total, &path)?;
        let mut out = Vec::with_capacity(lines.len());
        let mut at = 0usize;
        for (i, end) in lines.into_iter().enumerate() {
            let end = end as usize;
            out.push((from + i as u64, bytes[at..end - 1].to_vec()));
            at = end;
        }
        Ok(out)
    }

    /// Stored records with seq in `from..=to`, in chain order.
    pub fn records_in(&self, from: u64, to: u64) -> impl Iterator<Item = Result<R>> + '_ {
        let mut next = from.max(1);
        let to = to.min(self.len());
        let mut pending: std::vec::IntoIter<(u64, Vec<u8>)> = Vec::new().into_iter();
        let mut failed = false;
        std::iter::from_fn(move || loop {
            if failed {
                return None;
            }
            if let Some((_, bytes)) = pending.next() {
                return Some(
                    serde_json::from_slice::<Entry<R>>(&bytes)
                        .map(|e| e.record)
                        .map_err(Into::into),
                );
            }
            if next > to {
                return None;
            }
            match self.chunk(next, to) {
                Ok(c) if c.is_empty() => return None,
                Ok(c) => {
                    next = c.last().expect("non-empty").0 + 1;
                    pending = c.into_iter();
                }
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        })
    }

    /// Walks every line of every segment and reports every problem: a line whose content
    /// does not match its hash (changed), a seq missing (removed), a seq out of order
    /// (reordered), a seq seen twice (inserted), a record re-hashed after the fact (its
    /// successor links to a different hash), and a `HEAD` that names a missing or different
    /// record. Safe while appending: the walk stops at the head as it was when it started.
    pub fn verify(&self) -> Result<VerifyReport> {
        let stored_head = Self::read_head_file(&self.dir)?;
        let (head_now, paths) = {
            let w = self.writer.lock()?;
            let segs = self.segments.read()?;
            let paths: Vec<(PathBuf, u64)> = segs
                .iter()
                .map(|s| {
                    let len = if s.path == w.path {
                        w.pos
                    } else {
                        s.ends.last().copied().unwrap_or(0)
                    };
                    (s.path.clone(), len)
                })
                .collect();
            (w.head, paths)
        };
        let mut problems: Vec<Problem> = Vec::new();
        let mut push = |seq: u64, kind: ProblemKind, detail: String| {
            problems.push(Problem::at::<R>(seq, kind, detail))
        };
        // Hashes of the lines next to an irregularity (a line whose predecessor line is not
        // seq - 1): every link the walk cannot check in passing is resolved from these.
        let mut kept: HashMap<u64, Option<[u8; 32]>> = HashMap::new();
        let mut deferred: Vec<(u64, Option<[u8; 32]>)> = Vec::new();
        let mut seen = roaring_lite::Seen::default();
        let mut last: Option<(u64, Option<[u8; 32]>)> = None;
        let mut checked = 0u64;
        let mut max_seq = 0u64;
        for (path, len) in paths {
            let file = File::open(&path).map_err(|e| io("cannot read", &path, e))?;
            let mut reader = BufReader::with_capacity(1 << 20, file.take(len));
            let mut line = Vec::new();
            let mut position = 0u64;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| io("cannot read", &path, e))?;
                if n == 0 {
                    break;
                }
                position += 1;
                checked += 1;
                let expected = last.map(|l| l.0 + 1).unwrap_or(1);
                let raw: RawEntry = match serde_json::from_slice(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        push(
                            expected,
                            ProblemKind::Changed,
                            format!(
                                "line {position} of {} is not a chain entry: {e}",
                                path.file_name().unwrap_or_default().to_string_lossy()
                            ),
                        );
                        seen.insert(expected);
                        last = Some((expected, None));
                        continue;
                    }
                };
                let seq = raw.seq;
                if seq > head_now.seq.saturating_add(1 << 20) {
                    push(
                        0,
                        ProblemKind::Inserted,
                        format!("an entry claims seq {seq}, far beyond the head"),
                    );
                    continue;
                }
                let hash = parse_hash(&raw.hash);
                max_seq = max_seq.max(seq);
                if !seen.insert(seq) {
                    push(
                        seq,
                        ProblemKind::Inserted,
                        "a second entry with this seq".into(),
                    );
                }
                let record_seq = raw.record.get("seq").and_then(Value::as_u64);
                let record_id = raw.record.get("id").and_then(Value::as_str);
                let prev_hash = parse_hash(&raw.prev_hash);
                let content_ok =
                    prev_hash.is_some_and(|p| Some(chain_hash(&p, &raw.record)) == hash);
                if !content_ok {
                    push(
                        seq,
                        ProblemKind::Changed,
                        "content does not match its hash".into(),
                    );
                } else if record_seq != Some(seq) || record_id != Some(R::id_for(seq).as_str()) {
                    push(
                        seq,
                        ProblemKind::Changed,
                        format!("entry seq {seq} holds record seq {record_seq:?} id {record_id:?}"),
                    );
                }
                match last {
                    Some((pseq, phash)) if pseq + 1 == seq => {
                        if content_ok && phash.is_some() && phash != prev_hash {
                            push(
                                pseq,
                                ProblemKind::Changed,
                                format!("re-hashed: successor seq {seq} links to a different hash"),
                            );
                        }
                    }
                    None if seq == 1 => {
                        if content_ok && prev_hash != Some(GENESIS) {
                            push(
                                seq,
                                ProblemKind::Changed,
                                "first record does not start at genesis".into(),
                            );
                        }
                    }
                    _ => {
                        if let Some((pseq, _)) = last {
                            if seq <= pseq {
                                push(
                                    seq,
                                    ProblemKind::Reordered,
                                    format!("found after seq {pseq}"),
                                );
                            }
                        }
                        if let Some(l) = last {
                            kept.insert(l.0, l.1);
                        }
                        kept.insert(seq, hash);
                        if content_ok && seq > 1 {
                            deferred.push((seq, prev_hash));
                        }
                    }
                }
                last = Some((seq, hash));
            }
        }
        if let Some(l) = last {
            kept.insert(l.0, l.1);
        }
        for (seq, prev_hash) in deferred {
            if let Some(Some(h)) = kept.get(&(seq - 1)) {
                if Some(*h) != prev_hash {
                    push(
                        seq - 1,
                        ProblemKind::Changed,
                        format!("re-hashed: successor seq {seq} links to a different hash"),
                    );
                }
            }
        }
        let top = max_seq.max(stored_head.map(|h| h.seq).unwrap_or(0));
        let mut gaps = 0u64;
        for s in 1..=top {
            if !seen.contains(s) {
                gaps += 1;
                if gaps <= MAX_GAP_ITEMS {
                    push(s, ProblemKind::Removed, "missing from the log".into());
                }
            }
        }
        if gaps > MAX_GAP_ITEMS {
            push(
                0,
                ProblemKind::Removed,
                format!("... and {} more missing", gaps - MAX_GAP_ITEMS),
            );
        }
        if let Some(h) = stored_head {
            if seen.contains(h.seq) && h.seq > 0 {
                let at = match kept.get(&h.seq) {
                    Some(v) => *v,
                    None => self
                        .raw(h.seq)?
                        .and_then(|b| serde_json::from_slice::<EntryLink>(&b).ok())
                        .and_then(|l| parse_hash(&l.hash)),
                };
                if at != Some(h.hash) {
                    push(
                        h.seq,
                        ProblemKind::Changed,
                        "HEAD names a different hash for this record".into(),
                    );
                }
            }
        }
        problems.sort_by_key(|p| (p.seq, p.kind));
        problems.dedup();
        let head = stored_head.unwrap_or(head_now);
        Ok(VerifyReport {
            checked,
            head_seq: head.seq,
            head_hash: hex::encode(head.hash),
            problems,
        })
    }

    /// Makes every later write fail, as a full or failing disk would (tests of the fail-closed
    /// path): the active segment's handle is swapped for a read-only one.
    #[cfg(test)]
    pub fn break_writes_for_test(&self) {
        let mut w = self.writer.lock().unwrap();
        w.file = Arc::new(File::open("/dev/null").unwrap());
    }

    /// Appends an entry exactly as stored elsewhere (migration from the sled chain): `bytes`
    /// is the entry JSON, whose seq must be the next one.
    pub fn append_raw(&self, seq: u64, hash: [u8; 32], bytes: &[u8]) -> Result<()> {
        let mut w = self.writer.lock()?;
        let w = &mut *w;
        if seq != w.head.seq + 1 {
            return Err(AuditError::Corrupt(format!(
                "migrating seq {seq} after {}",
                w.head.seq
            )));
        }
        w.buf.clear();
        w.buf.extend_from_slice(bytes);
        w.buf.push(b'\n');
        let end = w.pos + w.buf.len() as u64;
        self.commit(w, vec![end], Head { seq, hash })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// A set of seqs as a bitmap (verify over millions of records without a hash set).
mod roaring_lite {
    #[derive(Default)]
    pub struct Seen(Vec<u64>);

    impl Seen {
        /// Inserts; false if it was there already.
        pub fn insert(&mut self, seq: u64) -> bool {
            let (w, b) = ((seq / 64) as usize, seq % 64);
            if w >= self.0.len() {
                self.0.resize(w + 1, 0);
            }
            let was = self.0[w] & (1 << b) != 0;
            self.0[w] |= 1 << b;
            !was
        }

        pub fn contains(&self, seq: u64) -> bool {
            let (w, b) = ((seq / 64) as usize, seq % 64);
            self.0.get(w).is_some_and(|x| x & (1 << b) != 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::tests::{index_keys, INDEX_NS};
    use crate::audit::chain::Chain;
    use crate::audit::receipt::Receipt;
    use crate::audit::store::tests::{full_receipt, tmp_db, tmp_log};

    fn append(log: &ReceiptLog<Receipt>, range: std::ops::RangeInclusive<u64>) {
        let prepared: Vec<PreparedRecord> = range
            .map(|i| PreparedRecord::new(&full_receipt(i)).unwrap())
            .collect();
        let refs: Vec<&PreparedRecord> = prepared.iter().collect();
        log.append_prepared(&refs).unwrap();
    }

    fn lines(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text.lines().map(String::from).collect())
            })
            .collect()
    }

    /// Rewrites the only segment with `edit` applied to its lines.
    fn edit_lines(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) {
        let (path, mut ls) = lines(dir).into_iter().next().unwrap();
        edit(&mut ls);
        let mut text = ls.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn kinds(r: &VerifyReport) -> Vec<(u64, ProblemKind)> {
        r.problems.iter().map(|p| (p.seq, p.kind)).collect()
    }

    #[test]
    fn entries_are_the_sled_chains_entries() {
        // Same bytes and hashes as the sled chain wrote, so a migrated store verifies whole.
        let db = tmp_db();
        let chain: Chain<Receipt> =
            Chain::open_shared(db.open_tree("c").unwrap(), INDEX_NS.to_vec()).unwrap();
        let mut rs: Vec<Receipt> = (1..=4).map(full_receipt).collect();
        rs[1].seq = 77; // ignored
        rs[2].id = "bogus\"id".into(); // ignored
        rs[3].request = None;
        chain.append_batch(rs.clone(), index_keys).unwrap();
        let dir = tmp_log();
        let log = ReceiptLog::<Receipt>::open(&dir).unwrap();
        let prepared: Vec<PreparedRecord> =
            rs.iter().map(|r| PreparedRecord::new(r).unwrap()).collect();
        assert_eq!(log.append_prepared(&[&prepared[0]]).unwrap(), 1);
        assert_eq!(
            log.append_prepared(&[&prepared[1], &prepared[2], &prepared[3]])
                .unwrap(),
            2
        );
        assert_eq!(log.head().unwrap(), chain.head().unwrap());
        let (_, ls) = lines(&dir).remove(0);
        for seq in 1..=4u64 {
            let stored = chain.tree().get(seq.to_be_bytes()).unwrap().unwrap();
            let stored: Value = serde_json::from_slice(&stored).unwrap();
            let ours: Value = serde_json::from_str(&ls[seq as usize - 1]).unwrap();
            assert_eq!(ours, stored, "seq {seq}");
        }
        assert_eq!(log.get(3).unwrap().unwrap().id, "R000000000003");
        assert!(log.verify().unwrap().is_ok());
    }

    #[test]
    fn reopen_continues_across_segments_and_reads_ranges() {
        let dir = tmp_log();
        {
            let log = ReceiptLog::<Receipt>::open_sized(&dir, 8 * 1024).unwrap();
            for i in 1..=30 {
                append(&log, i..=i);
            }
            log.checkpoint().unwrap();
        }
        let segments = lines(&dir);
        assert!(segments.len() > 2, "rotated: {}", segments.len());
        // Sealed segments have their offsets beside them.
        assert!(ends_path(&segments[0].0).exists());
        let log = ReceiptLog::<Receipt>::open_sized(&dir, 8 * 1024).unwrap();
        assert_eq!(log.len(), 30);
        append(&log, 31..=40);
        let all: Vec<u64> = log.records_in(1, 40).map(|r| r.unwrap().seq).collect();
        assert_eq!(all, (1..=40).collect::<Vec<_>>());
        let some: Vec<u64> = log.records_in(7, 12).map(|r| r.unwrap().seq).collect();
        assert_eq!(some, (7..=12).collect::<Vec<_>>());
        assert_eq!(log.records_in(41, 50).count(), 0);
        assert_eq!(log.get(25).unwrap().unwrap().id, "R000000000025");
        assert!(log.get(41).unwrap().is_none());
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, 40);
        // A stale offsets file is ignored (rebuilt by a scan).
        std::fs::write(ends_path(&segments[0].0), [1u8; 16]).unwrap();
        drop(log);
        let log = ReceiptLog::<Receipt>::open_sized(&dir, 8 * 1024).unwrap();
        assert_eq!(log.get(2).unwrap().unwrap().seq, 2);
    }

    #[test]
    fn an_interrupted_last_line_is_cut_off_and_the_chain_goes_on() {
        let dir = tmp_log();
        {
            let log = ReceiptLog::<Receipt>::open(&dir).unwrap();
            append(&log, 1..=3);
        }
        let (path, _) = lines(&dir).remove(0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"prev_hash\":\"00").unwrap();
        drop(f);
        let log = ReceiptLog::<Receipt>::open(&dir).unwrap();
        assert_eq!(log.len(), 3);
        append(&log, 4..=5);
        let report = log.verify().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.checked, 5);
    }

    #[test]
    fn verify_names_each_kind_of_tampering() {
        let fresh = |n: u64| {
            let dir = tmp_log();
            let log = ReceiptLog::<Receipt>::open(&dir).unwrap();
            append(&log, 1..=n);
            log.checkpoint().unwrap();
            drop(log);
            dir
        };
        let verify = |dir: &Path| ReceiptLog::<Receipt>::open(dir).unwrap().verify().unwrap();

        // Changed content.
        let dir = fresh(6);
        edit_lines(&dir, |ls| ls[2] = ls[2].replace("alice", "mallory"));
        assert_eq!(kinds(&verify(&dir)), vec![(3, ProblemKind::Changed)]);

        // A record rewritten and re-hashed: its successor's link gives it away.
        let dir = fresh(6);
        edit_lines(&dir, |ls| {
            let mut e: RawEntry = serde_json::from_str(&ls[2]).unwrap();
            e.record["actor"]["user"] = "mallory".into();
            let prev = parse_hash(&e.prev_hash).unwrap();
            let hash = chain_hash(&prev, &e.record);
            ls[2] = serde_json::json!({
                "seq": e.seq, "prev_hash": e.prev_hash, "hash": hex::encode(hash), "record": e.record
            })
            .to_string();
        });
        let r = verify(&dir);
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Changed)], "{r}");
        assert!(r.problems[0].detail.contains("re-hashed"), "{r}");

        // A line removed from the middle.
        let dir = fresh(6);
        edit_lines(&dir, |ls| {
            ls.remove(3);
        });
        assert_eq!(kinds(&verify(&dir)), vec![(4, ProblemKind::Removed)]);

        // Two lines swapped.
        let dir = fresh(6);
        edit_lines(&dir, |ls| ls.swap(2, 3));
        let r = verify(&dir);
        assert!(!r.is_ok());
        assert!(
            r.problems.iter().all(|p| p.kind == ProblemKind::Reordered),
            "{r}"
        );
        assert_eq!(kinds(&r), vec![(3, ProblemKind::Reordered)], "{r}");

        // A line duplicated.
        let dir = fresh(6);
        edit_lines(&dir, |ls| {
            let copy = ls[1].clone();
            ls.insert(4, copy);
        });
        let r = verify(&dir);
        assert!(kinds(&r).contains(&(2, ProblemKind::Inserted)), "{r}");
        assert!(
            r.problems.iter().all(|p| p.kind != ProblemKind::Changed),
            "{r}"
        );

        // The newest records cut off below the checkpointed head.
        let dir = fresh(6);
        edit_lines(&dir, |ls| ls.truncate(4));
        assert_eq!(
            kinds(&verify(&dir)),
            vec![(5, ProblemKind::Removed), (6, ProblemKind::Removed)]
        );

        // An unreadable line.
        let dir = fresh(6);
        edit_lines(&dir, |ls| ls[4] = "not json".into());
        let r = verify(&dir);
        assert!(kinds(&r).contains(&(5, ProblemKind::Changed)), "{r}");

        // Untouched: clean.
        let dir = fresh(6);
        assert!(verify(&dir).is_ok());
    }
}
