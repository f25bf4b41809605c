//! The six object categories: one shape and one saturated colour each.
//!
//! Colours are the six corners of the RGB cube other than black and white, so any two differ by
//! 255 in at least one channel (Euclidean distance >= 255) and every one is ~221 away from the
//! mid-grey background. That margin is what lets the detector classify noisy model outputs by
//! nearest colour.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Background colour: mid grey. It maps to ~0 in the [-1, 1] pixel space the diffusion model works
/// in, and it is equally far (~221) from all six object colours.
pub const BACKGROUND: [u8; 3] = [128, 128, 128];

/// An object category. The discriminant is the category id used in datasets and detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Circle = 0,
    Square = 1,
    Triangle = 2,
    Cross = 3,
    Ring = 4,
    Diamond = 5,
}

impl Category {
    /// All categories in id order.
    pub const ALL: [Category; 6] = [
        Category::Circle,
        Category::Square,
        Category::Triangle,
        Category::Cross,
        Category::Ring,
        Category::Diamond,
    ];

    /// The id (0..6) stored in datasets.
    pub fn id(self) -> usize {
        self as usize
    }

    /// The category with id `id`.
    pub fn from_id(id: usize) -> Result<Category> {
        match Self::ALL.get(id) {
            Some(&c) => Ok(c),
            None => bail!("category id {id} out of range 0..{}", Self::ALL.len()),
        }
    }

    /// Singular noun used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Category::Circle => "circle",
            Category::Square => "square",
            Category::Triangle => "triangle",
            Category::Cross => "cross",
            Category::Ring => "ring",
            Category::Diamond => "diamond",
        }
    }

    /// Plural noun used in captions with a count above one.
    pub fn plural(self) -> &'static str {
        match self {
            Category::Circle => "circles",
            Category::Square => "squares",
            Category::Triangle => "triangles",
            Category::Cross => "crosses",
            Category::Ring => "rings",
            Category::Diamond => "diamonds",
        }
    }

    /// The exact RGB colour the generator paints this category with.
    pub const fn color(self) -> [u8; 3] {
        match self {
            Category::Circle => [255, 0, 0],    // red
            Category::Square => [0, 0, 255],    // blue
            Category::Triangle => [0, 255, 0],  // green
            Category::Cross => [255, 255, 0],   // yellow
            Category::Ring => [255, 0, 255],    // magenta
            Category::Diamond => [0, 255, 255], // cyan
        }
    }

    /// Looks a category up by its singular or plural noun (lowercase).
    pub fn from_noun(word: &str) -> Option<(Category, bool)> {
        Self::ALL.iter().find_map(|&c| {
            if word == c.name() {
                Some((c, false))
            } else if word == c.plural() {
                Some((c, true))
            } else {
                None
            }
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Category {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match Category::from_noun(&s.trim().to_ascii_lowercase()) {
            Some((c, _)) => Ok(c),
            None => bail!("unknown category {s:?} (expected one of circle, square, triangle, cross, ring, diamond)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(a: [u8; 3], b: [u8; 3]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(&x, y)| (f32::from(x) - f32::from(y)).powi(2))
            .sum::<f32>()
            .sqrt()
    }

    #[test]
    fn palette_is_well_separated() {
        for a in Category::ALL {
            assert!(dist(a.color(), BACKGROUND) > 220.0);
            for b in Category::ALL {
                if a != b {
                    assert!(dist(a.color(), b.color()) >= 255.0, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn ids_and_nouns_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_id(c.id()).unwrap(), c);
            assert_eq!(Category::from_noun(c.name()), Some((c, false)));
            assert_eq!(Category::from_noun(c.plural()), Some((c, true)));
            assert_eq!(c.name().parse::<Category>().unwrap(), c);
        }
        assert!(Category::from_id(6).is_err());
        assert!("blob".parse::<Category>().is_err());
    }
}
