//! The JSON-lines file sink: one event per line, appended; the file is rotated by size
//! (`path` -> `path.1` -> ... -> `path.keep`), created with mode 0640 so a log shipper in the
//! file's group can read it. File I/O runs on the blocking pool, never on the runtime threads.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    config::JsonlSink,
    error::ExportError,
    event::Event,
    runner::{Deliver, DeliveryError},
};

const MODE: u32 = 0o640;

pub(crate) struct Jsonl {
    writer: Arc<Mutex<Writer>>,
}

impl Jsonl {
    pub fn new(cfg: &JsonlSink) -> Result<Self, ExportError> {
        if cfg.max_bytes == 0 {
            return Err(ExportError::config(&cfg.id, "max_bytes must be above 0"));
        }
        let mut writer = Writer {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            fsync: cfg.fsync,
            file: None,
        };
        // Open now so a wrong path is a start-up error, not a retry loop.
        writer
            .open()
            .map_err(|e| ExportError::config(&cfg.id, format!("{}: {e}", cfg.path.display())))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
        })
    }
}

impl Deliver for Jsonl {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), DeliveryError> {
        let lines: Vec<String> = events.iter().map(|e| e.to_json() + "\n").collect();
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(&lines)
        })
        .await
        .map_err(|e| DeliveryError::new(e.to_string()))?
    }
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    fsync: bool,
    /// The open file and its size; None after an error, reopened on the next batch.
    file: Option<(File, u64)>,
}

impl Writer {
    /// Append `lines`, rotating whenever the next line would pass `max_bytes` (a line longer
    /// than that gets a file of its own). On error the lines before the current file segment
    /// count as delivered.
    fn write(&mut self, lines: &[String]) -> Result<(), DeliveryError> {
        let mut delivered = 0;
        let mut pending = Vec::new();
        let mut pending_lines = 0;
        let fail = |this: &mut Self, delivered, e: io::Error| {
            this.file = None;
            DeliveryError {
                delivered,
                message: format!("{}: {e}", this.path.display()),
            }
        };
        for line in lines {
            let size = match self.open() {
                Ok(size) => size,
                Err(e) => return Err(fail(self, delivered, e)),
            };
            let full = size + (pending.len() + line.len()) as u64 > self.max_bytes;
            if full && size + pending.len() as u64 > 0 {
                if let Err(e) = self.flush(&mut pending) {
                    return Err(fail(self, delivered, e));
                }
                delivered += std::mem::take(&mut pending_lines);
                if let Err(e) = self.rotate() {
                    return Err(fail(self, delivered, e));
                }
            }
            pending.extend_from_slice(line.as_bytes());
            pending_lines += 1;
        }
        if let Err(e) = self.flush(&mut pending) {
            return Err(fail(self, delivered, e));
        }
        Ok(())
    }

    /// The open file's size, opening (or creating, mode 0640) it first if needed. A file whose
    /// last line was cut short by an earlier failed write gets a newline, so every later line
    /// still parses.
    fn open(&mut self) -> io::Result<u64> {
        if let Some((_, size)) = &self.file {
            return Ok(*size);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(MODE)
            .open(&self.path)?;
        let mut size = file.metadata()?.len();
        if size == 0 {
            // `mode` is filtered by the umask; the shipper's group needs read access.
            file.set_permissions(fs::Permissions::from_mode(MODE))?;
        } else {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(size - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        self.file = Some((file, size));
        Ok(size)
    }

    fn flush(&mut self, pending: &mut Vec<u8>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let Some((file, size)) = &mut self.file else {
            return Err(io::Error::other("file not open"));
        };
        file.write_all(pending)?;
        if self.fsync {
            file.sync_data()?;
        }
        *size += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            ignore_missing(fs::remove_file(numbered(&self.path, self.keep)))?;
            for n in (1..self.keep).rev() {
                ignore_missing(fs::rename(
                    numbered(&self.path, n),
                    numbered(&self.path, n + 1),
                ))?;
            }
            fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.open().map(drop)
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
