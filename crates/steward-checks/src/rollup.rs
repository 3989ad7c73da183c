//! Roll-ups: a check's runs aggregated per minute, hour and day: how many, how many good,
//! latency sum and maximum, and a latency histogram from which percentiles are estimated.
//! Histograms merge exactly, so an hour is the sum of its minutes and a day of its hours.
//!
//! Latency buckets are logarithmic: bucket `i` holds durations below
//! `100 µs * 2^((i + 1) / 4)` (four buckets per doubling, so an estimate is within about
//! 9% of the true value), up to about 15 minutes in the last one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Number of latency buckets.
pub const BUCKETS: usize = 96;
const BASE_US: f64 = 100.0;

/// The upper bound of bucket `i`, in microseconds.
pub fn upper_us(i: usize) -> f64 {
    BASE_US * 2f64.powf((i as f64 + 1.0) / 4.0)
}

fn lower_us(i: usize) -> f64 {
    if i == 0 {
        0.0
    } else {
        upper_us(i - 1)
    }
}

/// The bucket a duration falls in.
pub fn bucket_of(us: u64) -> usize {
    if (us as f64) < upper_us(0) {
        return 0;
    }
    let i = (4.0 * (us as f64 / BASE_US).log2()).floor() as i64;
    (i.max(0) as usize).min(BUCKETS - 1)
}

/// One bucket of runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub total: u64,
    pub up: u64,
    pub sum_us: u64,
    pub max_us: u64,
    /// Bucket index to count (only buckets with runs).
    pub hist: BTreeMap<u16, u64>,
}

impl Agg {
    pub fn add(&mut self, ok: bool, duration_us: u64) {
        self.total += 1;
        self.up += u64::from(ok);
        self.sum_us = self.sum_us.saturating_add(duration_us);
        self.max_us = self.max_us.max(duration_us);
        *self.hist.entry(bucket_of(duration_us) as u16).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Agg) {
        self.total += other.total;
        self.up += other.up;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
        for (b, n) in &other.hist {
            *self.hist.entry(*b).or_default() += n;
        }
    }

    /// The share of good runs (None without runs).
    pub fn uptime(&self) -> Option<f64> {
        (self.total > 0).then(|| self.up as f64 / self.total as f64)
    }

    pub fn mean_us(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum_us as f64 / self.total as f64)
    }

    /// The `q` quantile (0..=1) of latency, interpolated within its bucket and never above
    /// the maximum seen.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let n: u64 = self.hist.values().sum();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).max(1.0);
        let mut seen = 0u64;
        for (b, c) in &self.hist {
            if (seen + c) as f64 >= rank {
                let i = *b as usize;
                let (lo, hi) = (lower_us(i), upper_us(i));
                let within = (rank - seen as f64) / *c as f64;
                return Some((lo + (hi - lo) * within).min(self.max_us as f64));
            }
            seen += c;
        }
        Some(self.max_us as f64)
    }
}

/// Roll-up resolutions with their bucket length in seconds.
pub const RESOLUTIONS: [(&str, i64); 3] = [("minute", 60), ("hour", 3600), ("day", 86_400)];

/// The start of the bucket of length `len` seconds that holds `t` (Unix seconds).
pub fn bucket_start(t: i64, len: i64) -> i64 {
    t.div_euclid(len) * len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_the_range() {
        let mut last = 0;
        for us in [
            0,
            50,
            100,
            119,
            120,
            1_000,
            10_000,
            250_000,
            1_000_000,
            60_000_000,
            u64::MAX,
        ] {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            if us < 800_000_000 {
                assert!(
                    (us as f64) < upper_us(b),
                    "{us} below the upper bound of {b}"
                );
                assert!(
                    (us as f64) >= lower_us(b),
                    "{us} above the lower bound of {b}"
                );
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_close_to_exact_ones() {
        let mut a = Agg::default();
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect(); // 1 ms .. 1 s
        for s in &samples {
            a.add(true, *s);
        }
        for (q, exact) in [(0.5, 500_000.0), (0.95, 950_000.0), (0.99, 990_000.0)] {
            let est = a.quantile_us(q).unwrap();
            assert!((est - exact).abs() / exact < 0.1, "q{q}: {est} vs {exact}");
        }
        assert_eq!(a.quantile_us(1.0).unwrap(), 1_000_000.0);
        assert_eq!(Agg::default().quantile_us(0.5), None);
    }

    #[test]
    fn merging_equals_adding_everything_to_one() {
        let (mut a, mut b, mut all) = (Agg::default(), Agg::default(), Agg::default());
        for i in 0..100u64 {
            let (ok, d) = (i % 7 != 0, i * 1234 + 50);
            if i % 2 == 0 {
                a.add(ok, d)
            } else {
                b.add(ok, d)
            }
            all.add(ok, d);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(all.total, 100);
        assert_eq!(all.up, 100 - 15);
        assert!((all.uptime().unwrap() - 0.85).abs() < 1e-9);
    }

    #[test]
    fn bucket_starts() {
        assert_eq!(bucket_start(3_661, 60), 3_660);
        assert_eq!(bucket_start(3_661, 3600), 3_600);
        assert_eq!(bucket_start(-1, 60), -60);
    }
}
