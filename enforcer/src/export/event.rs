//! The exported event: a versioned envelope around a source record, the same in every sink
//! (documented for operators in EXPORT-SCHEMA.md).

use std::{sync::OnceLock, time::SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::source::Kind;

pub const SCHEMA: &str = "enforcer.event/1";

/// One record as exported. Field order is the wire order.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub schema: &'static str,
    pub kind: Kind,
    pub seq: u64,
    pub host: &'static str,
    /// RFC 3339, when this batch was read for export.
    pub exported_at: String,
    /// The source record as it is, or a stub (see `stub`).
    pub record: Value,
}

impl Event {
    /// One batch of records read from a source, stamped with one export time.
    pub fn batch(kind: Kind, records: Vec<(u64, Value)>) -> Vec<Event> {
        let exported_at = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        records
            .into_iter()
            .map(|(seq, record)| Event {
                schema: SCHEMA,
                kind,
                seq,
                host: hostname(),
                exported_at: exported_at.clone(),
                record,
            })
            .collect()
    }

    pub fn to_json(&self) -> String {
        // Serializing a Value-backed struct cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record's string field `key`, if any.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.record.get(key).and_then(Value::as_str)
    }

    /// This event with its record cut down to what identifies it, for transports that cannot
    /// carry `original_bytes` (the full record stays in the enforcer's log).
    pub fn stub(&self, original_bytes: usize) -> Event {
        let mut record = serde_json::json!({ "truncated": true, "original_bytes": original_bytes });
        if let Some(id) = self.record.get("id") {
            record["id"] = id.clone();
        }
        Event {
            record,
            ..self.clone()
        }
    }
}

/// This machine's name, read once ("localhost" if it cannot be read).
pub(crate) fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}
