//! The construction's random numbers: SplitMix64 (Steele, Lea & Flood 2014; the generator Java's
//! `SplittableRandom` uses), self-contained so a seed gives the same latents on every platform
//! and every version of every dependency.

/// SplitMix64: state += 0x9e3779b97f4a7c15, then the murmur3-style mix of the state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), unbiased: draws below the largest multiple of n are kept.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// The first `k` entries of a uniformly random permutation of `items` (partial
    /// Fisher-Yates from the front; `k <= items.len()`).
    pub fn sample<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut v = items.to_vec();
        let n = v.len();
        for i in 0..k.min(n) {
            let j = i + self.below((n - i) as u64) as usize;
            v.swap(i, j);
        }
        v.truncate(k.min(n));
        v
    }

    /// `k` draws from `items`, distinct while they last: the concatenation of fresh random
    /// permutations of `items`, cut to length `k` (the last one partial). Empty if `items` is.
    pub fn cycle_sample<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(k);
        if items.is_empty() {
            return out;
        }
        while out.len() < k {
            let take = (k - out.len()).min(items.len());
            out.extend(self.sample(items, take));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // SplitMix64 with seed 0: published first outputs.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn cycling_is_distinct_while_it_lasts() {
        let mut r = SplitMix64::new(7);
        let items: Vec<u32> = (0..5).collect();
        let s = r.cycle_sample(&items, 12);
        assert_eq!(s.len(), 12);
        for window in [&s[0..5], &s[5..10]] {
            let mut w = window.to_vec();
            w.sort();
            assert_eq!(w, items);
        }
        let mut tail = s[10..].to_vec();
        tail.dedup();
        assert_eq!(tail.len(), 2);
        assert!(r.cycle_sample::<u32>(&[], 3).is_empty());
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.sample(&items, 3), b.sample(&items, 3));
    }
}
