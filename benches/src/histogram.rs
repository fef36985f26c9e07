//! A latency histogram in fixed log buckets: 32 linear sub-buckets per power of two, so any
//! recorded value is reported within ~3% and memory stays constant however long the run.

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// Counts of nanosecond values per bucket.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// `counts[bucket(v)]` is how many recorded values fell in `v`'s bucket.
    counts: Vec<u64>,
    /// How many values were recorded.
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize], total: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The smallest value that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    (SUB + i % SUB) << shift
}

impl Histogram {
    /// Records one value (nanoseconds).
    pub fn record(&mut self, nanos: u64) {
        self.counts[bucket(nanos)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0..=1), as the middle of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (lo, hi) = (bucket_floor(i), bucket_floor(i + 1));
                return lo + (hi - lo) / 2;
            }
        }
        unreachable!("rank <= total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        for i in 0..1900 {
            assert_eq!(bucket(bucket_floor(i)), i);
            assert!(bucket_floor(i + 1) > bucket_floor(i));
        }
    }

    #[test]
    fn quantiles_within_three_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.03, "q{q}: {got} vs {want}");
        }
    }
}
