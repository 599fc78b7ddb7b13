//! `shapes`: a procedural dataset modelled on dSprites. Each 28x28 binary image holds one
//! sprite (a square, an ellipse or a heart) with a scale, a rotation and an x and y position.
//! Image i is a pure function of (seed, i), so any slice of the set can be made on its own.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::data::dataset::{Dataset, Factors};
use crate::error::Result;

/// Side of the square images.
pub const SIDE: usize = 28;
/// Values each factor takes: 3 shapes, 6 scales, 40 rotations, 14 x and 14 y positions.
pub const FACTOR_LEVELS: [usize; 5] = [3, 6, 40, 14, 14];

/// The sprite kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// A square.
    Square = 0,
    /// An ellipse with axes 1 : 0.5.
    Ellipse = 1,
    /// A heart.
    Heart = 2,
}

/// The ground-truth factors of one image, each as a level index and as a value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeFactors {
    /// Which sprite.
    pub shape: Shape,
    /// Scale in [0.5, 1].
    pub scale: f64,
    /// Rotation in radians, [0, 2 pi).
    pub rotation: f64,
    /// Centre x in [0, 1] (fraction of the free range).
    pub x: f64,
    /// Centre y in [0, 1].
    pub y: f64,
    /// The level index of each factor, as in [`FACTOR_LEVELS`].
    pub levels: [usize; 5],
}

impl ShapeFactors {
    /// The factors of image `index` for `seed`.
    pub fn draw(seed: u64, index: u64) -> Self {
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Data, index);
        let levels = FACTOR_LEVELS.map(|n| rng.random_range(0..n));
        let frac = |l: usize, n: usize| l as f64 / (n - 1) as f64;
        ShapeFactors {
            shape: [Shape::Square, Shape::Ellipse, Shape::Heart][levels[0]],
            scale: 0.5 + 0.5 * frac(levels[1], FACTOR_LEVELS[1]),
            rotation: std::f64::consts::TAU * levels[2] as f64 / FACTOR_LEVELS[2] as f64,
            x: frac(levels[3], FACTOR_LEVELS[3]),
            y: frac(levels[4], FACTOR_LEVELS[4]),
            levels,
        }
    }

    /// Renders the sprite: a pixel is on when its centre falls inside the shape.
    pub fn render(&self, out: &mut [u8]) {
        let half = 0.2 * self.scale; // half-size, as a fraction of the image side
        let lo = 0.22;
        let (cx, cy) = (
            lo + (1.0 - 2.0 * lo) * self.x,
            lo + (1.0 - 2.0 * lo) * self.y,
        );
        let (s, c) = self.rotation.sin_cos();
        for py in 0..SIDE {
            for px in 0..SIDE {
                let dx = (px as f64 + 0.5) / SIDE as f64 - cx;
                let dy = (py as f64 + 0.5) / SIDE as f64 - cy;
                // Into the sprite's own frame: rotate back, then normalise by size.
                let u = (c * dx + s * dy) / half;
                let v = (-s * dx + c * dy) / half;
                let inside = match self.shape {
                    Shape::Square => u.abs() <= 0.8 && v.abs() <= 0.8,
                    Shape::Ellipse => u * u + 4.0 * v * v <= 1.0,
                    Shape::Heart => {
                        // (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y pointing up in the image.
                        let (x, y) = (1.15 * u, -1.15 * v + 0.1);
                        let r = x * x + y * y - 1.0;
                        r * r * r - x * x * y * y * y <= 0.0
                    }
                };
                out[py * SIDE + px] = if inside { 255 } else { 0 };
            }
        }
    }
}

/// The names of the factors `generate` stores with each image, in order (the shape as its
/// index 0, 1, 2).
pub const FACTOR_NAMES: [&str; 5] = ["shape", "scale", "rotation", "x", "y"];

/// Images `start .. start + count` of the `shapes` set for `seed`, with their factors and
/// shape labels.
///
/// ```
/// let ds = elbo::data::shapes::generate(0, 0, 10)?;
/// assert_eq!((ds.len(), ds.dim(), ds.image_shape), (10, 784, Some((28, 28))));
/// let f = ds.factors.as_ref().unwrap();
/// assert_eq!(f.names()[0], "shape");
/// // A pure function of (seed, index): image 5 of a set starting at 5 is image 5 here.
/// assert_eq!(elbo::data::shapes::generate(0, 5, 1)?.row(0), ds.row(5));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn generate(seed: u64, start: u64, count: usize) -> Result<Dataset> {
    let factors: Vec<ShapeFactors> = (0..count as u64)
        .map(|i| ShapeFactors::draw(seed, start + i))
        .collect();
    let mut pixels = vec![0u8; count * SIDE * SIDE];
    for (f, img) in factors.iter().zip(pixels.chunks_exact_mut(SIDE * SIDE)) {
        f.render(img);
    }
    let mut ds = Dataset::from_bytes(count, SIDE * SIDE, pixels)?;
    ds.labels = Some(factors.iter().map(|f| f.shape as u8).collect());
    let values = factors
        .iter()
        .flat_map(|f| [f.shape as u8 as f64, f.scale, f.rotation, f.x, f.y])
        .collect();
    ds.factors = Some(Factors::new(
        FACTOR_NAMES.iter().map(|n| n.to_string()).collect(),
        values,
    )?);
    ds.image_shape = Some((SIDE, SIDE));
    Ok(ds)
}
