//! Cardinality caps: a name becomes a label value only while fewer than `cap` distinct
//! names have been seen; later names share the [`OVERFLOW`] entry. Without this a client
//! calling random tool names would grow the scrape (and the daemon's memory) without bound.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use super::labels::OVERFLOW;

/// Names longer than this are not label material (and would bloat every scrape).
const MAX_NAME_LEN: usize = 128;

/// Interns names up to a cap, mapping each to a value built once (a label, or a struct of
/// pre-resolved metric handles). Lookups of known names take a shared lock only.
#[derive(Debug)]
pub(crate) struct BoundedLabels<V> {
    cap: usize,
    inner: RwLock<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<Arc<str>, V>,
    /// Names counted against the cap (not `_other`, not names inserted uncapped).
    capped: usize,
}

impl<V: Clone> BoundedLabels<V> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: RwLock::new(Inner {
                entries: HashMap::new(),
                capped: 0,
            }),
        }
    }

    /// The value for `name`, or for `_other` once the cap is reached. `make` gets the
    /// interned label value.
    pub fn get(&self, name: &str, make: impl FnOnce(Arc<str>) -> V) -> V {
        self.lookup(name, true, make)
    }

    /// Like [`get`](Self::get), for names from a closed set the caller already bounded
    /// (e.g. method labels): they neither count against nor fall to the cap.
    pub fn get_uncapped(&self, name: &'static str, make: impl FnOnce(Arc<str>) -> V) -> V {
        self.lookup(name, false, make)
    }

    fn lookup(&self, name: &str, capped: bool, make: impl FnOnce(Arc<str>) -> V) -> V {
        if let Some(v) = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .get(name)
        {
            return v.clone();
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have inserted it between the two locks.
        if let Some(v) = inner.entries.get(name) {
            return v.clone();
        }
        let fits = !capped || (inner.capped < self.cap && label_material(name));
        let key: Arc<str> = if fits { name.into() } else { OVERFLOW.into() };
        if let Some(v) = inner.entries.get(&key) {
            return v.clone();
        }
        if fits && capped {
            inner.capped += 1;
        }
        let v = make(key.clone());
        inner.entries.insert(key, v.clone());
        v
    }

    /// Every interned value (for snapshots; takes the shared lock once).
    pub fn values(&self) -> Vec<V> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.entries.values().cloned().collect()
    }
}

/// Empty, over-long or control-character names are junk (or an attempt to garble the
/// exposition and `enforcer top`), not names worth a series.
fn label_material(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_cap_share_other() {
        let b = BoundedLabels::<Arc<str>>::new(2);
        assert_eq!(&*b.get("a", |k| k), "a");
        assert_eq!(&*b.get("b", |k| k), "b");
        assert_eq!(&*b.get("c", |k| k), OVERFLOW);
        assert_eq!(&*b.get("a", |k| k), "a");
        assert_eq!(&*b.get_uncapped("tools/list", |k| k), "tools/list");
        assert_eq!(&*b.get(&"x".repeat(MAX_NAME_LEN + 1), |k| k), OVERFLOW);
        assert_eq!(b.values().len(), 4);
    }

    #[test]
    fn junk_names_are_other_even_under_the_cap() {
        let b = BoundedLabels::<Arc<str>>::new(10);
        assert_eq!(&*b.get("", |k| k), OVERFLOW);
        assert_eq!(&*b.get("a\rb", |k| k), OVERFLOW);
        assert_eq!(&*b.get(&"y".repeat(MAX_NAME_LEN + 1), |k| k), OVERFLOW);
        assert_eq!(&*b.get("z", |k| k), "z");
    }
}
