//! A lock-free classic histogram that prometheus-client encodes like its own.
//!
//! Why not `prometheus_client::metrics::histogram::Histogram`: it takes a mutex on every
//! observation and does not expose its buckets, and `enforcer top` needs the buckets to
//! estimate percentiles.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Tool-call latency, seconds: 50 µs .. 30 s in 1-2.5-5 steps.
pub(crate) const CALL_LATENCY: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Session duration, seconds: 1 s .. 1 day.
pub(crate) const SESSION_DURATION: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];
/// Calls in one session.
pub(crate) const SESSION_CALLS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Distinct tools used in one session.
pub(crate) const SESSION_TOOLS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0];
/// Revocation to last flow killed, seconds: 100 µs .. 10 s.
pub(crate) const KILL_LATENCY: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// One audit record written (and synced), seconds: 10 µs .. 1 s.
pub(crate) const AUDIT_WRITE: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Cloning shares the counts (like prometheus-client's metrics), so a family and a cached
/// handle observe into the same series.
#[derive(Debug, Clone)]
pub(crate) struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Ascending upper bounds, `+Inf` implied.
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; one more than `bounds` for `+Inf`.
    counts: Box<[AtomicU64]>,
    /// `f64` bits, updated by compare-and-swap.
    sum: AtomicU64,
}

/// Counts read at one moment, for percentile estimates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self(Arc::new(Inner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, v: f64) {
        // Buckets are `le` (upper bound inclusive). Values come from durations and counts,
        // so never NaN.
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.counts[i].fetch_add(1, Relaxed);
        let _ = self.0.sum.fetch_update(Relaxed, Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
    }

    pub fn buckets(&self) -> Buckets {
        Buckets {
            bounds: self.0.bounds,
            counts: self.0.counts.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = self.buckets();
        // Count derived from the same reads as the buckets, so `_count` always equals the
        // `+Inf` bucket as OpenMetrics requires, even while observations race the scrape.
        let pairs: Vec<(f64, u64)> = b
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(b.counts.iter().copied())
            .collect();
        let sum = f64::from_bits(self.0.sum.load(Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, b.count(), &pairs, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl Buckets {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Estimated `q`-quantile (0..=1). An estimate only: it assumes observations are
    /// spread evenly inside their bucket (linear interpolation, as PromQL's
    /// `histogram_quantile`); the first bucket starts at 0, and a rank falling in `+Inf`
    /// reports the highest finite bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                return Some(lower + (upper - lower) * (rank - below as f64) / n as f64);
            }
            below += n;
        }
        self.bounds.last().copied()
    }

    #[cfg(test)]
    fn counts(&self) -> &[u64] {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &[f64] = &[1.0, 2.0, 4.0, 8.0];

    #[test]
    fn observations_land_in_le_buckets() {
        let h = Histogram::new(B);
        for v in [0.0, 0.5, 1.0, 1.5, 4.0, 100.0] {
            h.observe(v);
        }
        assert_eq!(h.buckets().counts(), &[3, 1, 1, 0, 1]);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let h = Histogram::new(B);
        // 10 in (0,1], 10 in (2,4].
        for _ in 0..10 {
            h.observe(0.5);
            h.observe(3.0);
        }
        let b = h.buckets();
        assert_eq!(b.quantile(0.25), Some(0.5)); // rank 5 of 10 in (0,1]
        assert_eq!(b.quantile(0.75), Some(3.0)); // rank 15: 5 of 10 in (2,4]
        assert_eq!(b.quantile(1.0), Some(4.0));
        assert_eq!(Histogram::new(B).buckets().quantile(0.5), None);
        h.observe(1e9);
        assert_eq!(h.buckets().quantile(1.0), Some(8.0)); // +Inf reports the last bound
    }
}
