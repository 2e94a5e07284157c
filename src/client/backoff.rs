//! Jittered exponential backoff: fast first retries, capped.

use std::time::Duration;

/// First retry delay; doubles per failed attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Jittered exponential backoff: fast first retries, capped.
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: &str) -> Self {
        let s = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Jitter(s | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// base·2^attempt capped at `max`, then scaled by a random factor in [0.5, 1.0].
    pub(super) fn backoff(&mut self, attempt: u32, max: Duration) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(16))
            .min(max);
        let factor = 0.5 + (self.next() % 1000) as f64 / 2000.0;
        exp.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let mut j = Jitter::new("seed");
        let max = Duration::from_secs(30);
        let first = j.backoff(0, max);
        assert!(
            first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
            "{first:?}"
        );
        let later = j.backoff(5, max);
        assert!(
            later >= BACKOFF_BASE * 16 && later <= BACKOFF_BASE * 32,
            "{later:?}"
        );
        for a in [10, 20, 100, u32::MAX] {
            let d = j.backoff(a, max);
            assert!(d <= max && d >= max / 2, "{a}: {d:?}");
        }
        let a: Vec<_> = (0..8).map(|_| j.backoff(3, max)).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]), "jitter varies: {a:?}");
    }
}
