//! Exponential backoff with jitter between retries of a failed delivery, so many enforcers do
//! not hammer a recovering receiver in lockstep.

use std::{
    hash::{BuildHasher as _, RandomState},
    time::Duration,
};

pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: initial * 2^attempt capped at max, then "equal jitter" (half fixed, half
    /// random) so the delay still grows while retries spread out.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .initial
            .saturating_mul(1 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A number in [0, 1]. std's per-instance random hasher keys are random enough for jitter and
/// spare a dependency.
fn random_unit() -> f64 {
    RandomState::new().hash_one(0u8) as f64 / u64::MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[2] >= Duration::from_millis(200) && delays[2] <= Duration::from_millis(400));
        for d in &delays[4..] {
            assert!(*d >= Duration::from_millis(500) && *d <= Duration::from_millis(1000));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
