//! Per-detector match counts. Holds detector names and counts only — never matched text.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Count of matches per detector name (sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Findings(BTreeMap<String, u32>);

impl Findings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total number of matches over all detectors.
    #[cfg(test)]
    pub fn total(&self) -> u32 {
        self.0.values().fold(0u32, |a, &b| a.saturating_add(b))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Count for one detector (0 if none).
    #[cfg(test)]
    pub fn get(&self, detector: &str) -> u32 {
        self.0.get(detector).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(k, &v)| (k.as_str(), v))
    }

    pub fn as_map(&self) -> &BTreeMap<String, u32> {
        &self.0
    }

    /// Add the counts of `other` to `self`.
    #[cfg(test)]
    pub fn merge(&mut self, other: &Findings) {
        for (k, &v) in &other.0 {
            self.add_n(k, v);
        }
    }

    pub(crate) fn add(&mut self, detector: &str) {
        self.add_n(detector, 1);
    }

    fn add_n(&mut self, detector: &str, n: u32) {
        match self.0.get_mut(detector) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.0.insert(detector.to_string(), n);
            }
        }
    }
}

/// `email=2 jwt=1` (empty string when there are no findings).
impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_total_display() {
        let mut f = Findings::new();
        assert!(f.is_empty());
        assert_eq!(f.total(), 0);
        f.add("jwt");
        f.add("email");
        f.add("email");
        assert_eq!(f.get("email"), 2);
        assert_eq!(f.get("jwt"), 1);
        assert_eq!(f.get("nope"), 0);
        assert_eq!(f.total(), 3);
        assert_eq!(f.to_string(), "email=2 jwt=1");
        let mut g = Findings::new();
        g.add("jwt");
        g.merge(&f);
        assert_eq!(g.get("jwt"), 2);
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"{"email":2,"jwt":2}"#);
    }
}
