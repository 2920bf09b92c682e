//! What the exporter reads: the enforcer's append-only, sequence-numbered logs. They are the
//! durable queue, so a sink that falls behind loses nothing; it reads forward from its cursor.

use serde::{Deserialize, Serialize};

/// One append-only log the exporter reads (implemented over the receipt and admin stores).
pub trait Source: Send + Sync + 'static {
    /// "receipt" or "admin"
    fn kind(&self) -> &'static str;
    /// Highest sequence number written so far (0 = empty).
    fn head(&self) -> u64;
    /// Up to `max` records with sequence number > `after`, in order: (seq, record JSON).
    fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, serde_json::Value)>, String>;
}

/// The kinds of record there are to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Receipt,
    Admin,
}

impl Kind {
    pub(crate) const ALL: [Kind; 2] = [Kind::Receipt, Kind::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Receipt => "receipt",
            Kind::Admin => "admin",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}
