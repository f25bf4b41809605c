//! How objects are coloured. The first world paints each category in its own colour, so colour
//! alone names the category. The latent world (issue 22) draws every object's colour from one
//! palette all categories share, independently of its shape, so only the shape does.

use crate::category::Category;
use serde::{Deserialize, Serialize};

/// The colouring rule of a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Palette {
    /// One colour per category ([`Category::color`]): the embedded toy model's world.
    #[default]
    PerCategory,
    /// Each object's colour drawn uniformly from [`SHARED_COLORS`], whatever its shape.
    Shared,
}

impl Palette {
    /// For serde's `skip_serializing_if`: the first world's files stay as they were.
    pub fn is_per_category(&self) -> bool {
        *self == Palette::PerCategory
    }
}

/// The shared palette: the same six saturated colours (the RGB cube's corners other than black
/// and white), so the pixel classification of the first world's detector applies unchanged.
pub const SHARED_COLORS: [[u8; 3]; 6] = [
    Category::Circle.color(),
    Category::Square.color(),
    Category::Triangle.color(),
    Category::Cross.color(),
    Category::Ring.color(),
    Category::Diamond.color(),
];
