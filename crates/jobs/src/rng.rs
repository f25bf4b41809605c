//! The one random number generator of semi's file formats: SplitMix64 (Steele, Lea and Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014; the constants are those of
//! Java's `SplittableRandom`).
//!
//! Datasets (the toy world's scenes) and SemI's constructed latents must be reproducible
//! forever, so we do not depend on an external crate whose stream may change between versions.
//! SplitMix64 is short enough to own, passes BigCrush, and seeds well from any 64-bit value.
//! Re-exported as `semi_toyworld::rng` and `semi_tickets::rng`.

/// The SplitMix64 golden-gamma increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output mixer (a bijection on u64).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 generator. Its stream is part of the toy dataset format and of SemI's latents:
/// do not change it.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is `mix64(seed + GAMMA)`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for item `index` of the run `seed`: both are mixed so that nearby
    /// seeds and indices give unrelated streams.
    pub fn for_item(seed: u64, index: u64) -> Self {
        Self::new(mix64(seed ^ mix64(index.wrapping_add(GAMMA))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform integer in `0..n` (unbiased, by rejection). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        // Reject the top partial block of the u64 range so every residue is equally likely.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform integer in `lo..=hi` (requires `lo <= hi`).
    pub fn range_inclusive(&mut self, lo: u32, hi: u32) -> u32 {
        assert!(lo <= hi, "SplitMix64::range_inclusive({lo}, {hi})");
        lo + self.below(u64::from(hi - lo) + 1) as u32
    }

    /// Uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fisher-Yates shuffle driven by this stream.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
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

    /// Reference values from the published SplitMix64 reference implementation
    /// (Vigna's splitmix64.c) seeded with 1234567 and with 0.
    #[test]
    fn matches_reference_stream() {
        let mut r = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0u32; 6];
        for _ in 0..6000 {
            seen[r.below(6) as usize] += 1;
        }
        // Each bucket expects 1000; 800 is > 6 standard deviations away.
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn items_get_distinct_streams() {
        let a = SplitMix64::for_item(1, 0).next_u64();
        let b = SplitMix64::for_item(1, 1).next_u64();
        let c = SplitMix64::for_item(2, 0).next_u64();
        assert!(a != b && a != c && b != c);
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
