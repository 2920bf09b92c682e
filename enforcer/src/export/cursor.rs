//! A sink's cursor: the last sequence number it delivered, per source kind, in
//! `<cursor_dir>/<sink id>.cursor` as JSON (`{"receipt":12,"admin":3}`). Written only after a
//! delivery is acknowledged, so a crash re-sends at most one batch and never skips one.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use super::{error::ExportError, source::Kind};

pub(crate) type Cursors = BTreeMap<Kind, u64>;

#[derive(Debug, Clone)]
pub(crate) struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    pub fn new(dir: &Path, sink_id: &str) -> Self {
        Self {
            path: dir.join(format!("{sink_id}.cursor")),
        }
    }

    /// The stored cursors; empty when the sink has never run. An unreadable file is an error:
    /// guessing would skip or repeat events.
    pub fn load(&self) -> Result<Cursors, ExportError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursors::new()),
            Err(e) => return Err(self.error(e)),
        };
        serde_json::from_str(&text).map_err(|e| self.error(e))
    }

    /// Replace the file atomically: write a temporary file, fsync it, rename it over.
    pub fn store(&self, cursors: &Cursors) -> io::Result<()> {
        let tmp = self.path.with_extension("cursor.tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(cursors)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)
    }

    pub fn error(&self, e: impl std::fmt::Display) -> ExportError {
        ExportError::Cursor {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}
