//! Kernel counters (BPF maps), read at scrape time rather than copied periodically, so a
//! scrape always shows the maps' current values and nothing polls them between scrapes.

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::counter::ConstCounter,
};

/// One monotonically increasing kernel counter, exported as `enforcer_kernel_<name>_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCounter {
    /// `[a-z0-9_]+`, without `_total`; other names are skipped (and logged).
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// Returns the current values; called on every scrape and snapshot, so it should read the
/// maps and nothing more.
pub type KernelSource = Box<dyn Fn() -> Vec<KernelCounter> + Send + Sync>;

/// Shared between `Metrics` (which sets the source) and the registry (which reads it).
#[derive(Clone, Default)]
pub(crate) struct KernelSlot(Arc<RwLock<Option<KernelSource>>>);

impl std::fmt::Debug for KernelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelSlot")
    }
}

impl KernelSlot {
    pub fn set(&self, source: KernelSource) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Current values with valid names only.
    pub fn read(&self) -> Vec<KernelCounter> {
        let slot = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut counters = slot.as_ref().map(|f| f()).unwrap_or_default();
        counters.retain(|c| {
            let ok = valid_name(c.name);
            if !ok {
                tracing::warn!(name = c.name, "kernel counter with an invalid name skipped");
            }
            ok
        });
        counters
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Collector for KernelSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for c in self.read() {
            let counter = ConstCounter::new(c.value);
            let name = format!("kernel_{}", c.name);
            let metric = encoder.encode_descriptor(&name, c.help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_are_dropped() {
        let slot = KernelSlot::default();
        assert!(slot.read().is_empty());
        slot.set(Box::new(|| {
            vec![
                KernelCounter {
                    name: "redirects",
                    help: "h",
                    value: 1,
                },
                KernelCounter {
                    name: "bad name\n",
                    help: "h",
                    value: 2,
                },
            ]
        }));
        assert_eq!(slot.read().len(), 1);
    }
}
