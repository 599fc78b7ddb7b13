//! Pictures of a model: grids of images as PNG, a scatter of 2-D latent means, and training
//! curves as SVG. Images are rows of values in [0, 1] with a known height and width.

use std::path::Path;

use crate::error::{Error, Result};
use crate::train::EpochReport;

/// Grey pixels between tiles.
const GAP: usize = 2;

fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| Error::io("encoding", path, std::io::Error::other(e)))?;
        w.write_image_data(pixels)
            .map_err(|e| Error::io("encoding", path, std::io::Error::other(e)))?;
    }
    crate::io::write_atomic(path, &bytes)
}

/// Writes `images` (each `h x w` values in [0, 1], row-major) as a grid with `cols` tiles per
/// row, each pixel drawn `scale` times larger. Returns the picture's (width, height).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let images = vec![vec![0.0f32, 1.0, 1.0, 0.0]; 3];         // three 2 x 2 images
/// let (w, h) = elbo::pictures::write_grid(dir.path().join("grid.png"), &images, (2, 2), 2, 4)?;
/// assert!(w > 0 && h > 0);
/// assert!(elbo::pictures::write_grid(dir.path().join("bad.png"), &images, (3, 3), 2, 4).is_err());
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_grid(
    path: impl AsRef<Path>,
    images: &[Vec<f32>],
    (h, w): (usize, usize),
    cols: usize,
    scale: usize,
) -> Result<(usize, usize)> {
    let path = path.as_ref();
    if images.is_empty() || cols == 0 || scale == 0 || images.iter().any(|im| im.len() != h * w) {
        return Err(Error::shape(
            "picture grid",
            format!("images of {h} x {w} values"),
            images.len(),
        ));
    }
    let rows = images.len().div_ceil(cols);
    let (tw, th) = (w * scale + GAP, h * scale + GAP);
    let (width, height) = (cols * tw + GAP, rows * th + GAP);
    let mut px = vec![96u8; width * height];
    for (k, im) in images.iter().enumerate() {
        let (r0, c0) = (GAP + (k / cols) * th, GAP + (k % cols) * tw);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let v = im[(y / scale) * w + x / scale].clamp(0.0, 1.0);
                px[(r0 + y) * width + c0 + x] = (v * 255.0).round() as u8;
            }
        }
    }
    write_png(path, width, height, png::ColorType::Grayscale, &px)?;
    Ok((width, height))
}

/// Ten well-separated colours, one per class label.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// A `size x size` scatter of 2-D points coloured by label, on [-4, 4]^2 with axes through 0.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let points = [(-1.0f32, 0.5), (2.0, -3.0), (0.0, 0.0)];
/// elbo::pictures::write_scatter(dir.path().join("means.png"), &points, &[0, 1, 2], 64)?;
/// assert!(dir.path().join("means.png").is_file());
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_scatter(
    path: impl AsRef<Path>,
    points: &[(f32, f32)],
    labels: &[u8],
    size: usize,
) -> Result<()> {
    let path = path.as_ref();
    let mut px = vec![255u8; size * size * 3];
    let to_px = |v: f32| (((v + 4.0) / 8.0) * (size - 1) as f32).round() as i64;
    for i in 0..size {
        for (x, y) in [(i, size / 2), (size / 2, i)] {
            px[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&[200, 200, 200]);
        }
    }
    for (k, &(a, b)) in points.iter().enumerate() {
        let c = PALETTE[labels.get(k).copied().unwrap_or(0) as usize % 10];
        let (cx, cy) = (to_px(a), to_px(-b));
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (x, y) = (cx + dx, cy + dy);
                if (0..size as i64).contains(&x) && (0..size as i64).contains(&y) {
                    let o = (y as usize * size + x as usize) * 3;
                    px[o..o + 3].copy_from_slice(&c);
                }
            }
        }
    }
    write_png(path, size, size, png::ColorType::Rgb, &px)
}

/// Points of width `dim` (row-major) as 2-D points for a scatter: their first two
/// coordinates when `dim <= 2`, else their projections on the first two principal components
/// (power iteration on the covariance matrix, deflated once). Centred, and scaled so that the
/// farthest coordinate lies at 3.5, inside [`write_scatter`]'s [-4, 4] frame.
///
/// ```
/// // Points along the line (1, 1, 0): the first component carries all the spread.
/// let pts: Vec<f64> = (0..5).flat_map(|i| [i as f64, i as f64, 0.0]).collect();
/// let plane = elbo::pictures::principal_plane(&pts, 3);
/// assert!(plane.iter().all(|p| p.1.abs() < 1e-4));
/// assert!((plane[4].0.abs() - 3.5).abs() < 1e-4);
/// ```
pub fn principal_plane(points: &[f64], dim: usize) -> Vec<(f32, f32)> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    if n == 0 {
        return Vec::new();
    }
    let mut mean = vec![0.0; dim];
    for p in points.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / n as f64;
        }
    }
    let centred: Vec<f64> = points
        .chunks_exact(dim)
        .flat_map(|p| p.iter().zip(&mean).map(|(v, m)| v - m).collect::<Vec<_>>())
        .collect();
    let coords: Vec<[f64; 2]> = if dim <= 2 {
        centred
            .chunks_exact(dim)
            .map(|p| [p[0], p.get(1).copied().unwrap_or(0.0)])
            .collect()
    } else {
        let mut cov = vec![0.0; dim * dim];
        for p in centred.chunks_exact(dim) {
            for a in 0..dim {
                for b in 0..dim {
                    cov[a * dim + b] += p[a] * p[b];
                }
            }
        }
        let trace: f64 = (0..dim).map(|a| cov[a * dim + a]).sum();
        // Removes the components already found, twice (once leaves rounding of the size of
        // what it removed, which normalising a near-zero vector would blow up).
        let orthogonalise = |w: &mut Vec<f64>, comps: &[Vec<f64>]| {
            for _ in 0..2 {
                for u in comps {
                    let d: f64 = w.iter().zip(u).map(|(x, y)| x * y).sum();
                    for (x, y) in w.iter_mut().zip(u) {
                        *x -= d * y;
                    }
                }
            }
        };
        let normalised = |w: &[f64]| {
            let n = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            w.iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let mut comps: Vec<Vec<f64>> = Vec::new();
        for c in 0..2 {
            let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + (i + c) as f64 * 0.1).collect();
            orthogonalise(&mut v, &comps);
            v = normalised(&v);
            for _ in 0..500 {
                let mut w: Vec<f64> = (0..dim)
                    .map(|a| (0..dim).map(|b| cov[a * dim + b] * v[b]).sum())
                    .collect();
                orthogonalise(&mut w, &comps);
                let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm <= 1e-12 * trace {
                    // No variance left: any direction orthogonal to the first will do.
                    break;
                }
                v = w.iter().map(|x| x / norm).collect();
            }
            orthogonalise(&mut v, &comps);
            comps.push(normalised(&v));
        }
        centred
            .chunks_exact(dim)
            .map(|p| {
                let proj = |u: &[f64]| p.iter().zip(u).map(|(x, y)| x * y).sum::<f64>();
                [proj(&comps[0]), proj(&comps[1])]
            })
            .collect()
    };
    let reach = coords
        .iter()
        .flat_map(|c| c.iter().map(|v| v.abs()))
        .fold(0.0, f64::max);
    let scale = if reach > 0.0 { 3.5 / reach } else { 1.0 };
    coords
        .iter()
        .map(|c| ((c[0] * scale) as f32, (c[1] * scale) as f32))
        .collect()
}

/// Training curves: train and test -ELBO, reconstruction term (-E[log p(x|z)]) and KL per
/// epoch, as an SVG.
///
/// ```
/// use elbo::{Dataset, FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};
/// let data = Dataset::from_bytes(32, 4, (0..128).map(|i| (i * 37 % 256) as u8).collect())?;
/// let vae = Vae::new(VaeConfig::mnist().input_dim(4).hidden(&[8]).latent_dim(2))?;
/// let config = TrainConfig::default().epochs(2).batch_size(8);
/// let mut trainer = Trainer::<f32>::new(vae, config, &Parallelism::threads(1)?)?;
/// let reports = trainer.fit(&data, FitOptions::new())?;
/// let dir = tempfile::tempdir().unwrap();
/// elbo::pictures::write_curves(dir.path().join("curves.svg"), &reports)?;
/// let svg = std::fs::read_to_string(dir.path().join("curves.svg")).unwrap();
/// assert!(svg.starts_with("<svg"));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_curves(path: impl AsRef<Path>, epochs: &[EpochReport]) -> Result<()> {
    let path = path.as_ref();
    use plotters::prelude::*;
    if epochs.is_empty() {
        return Ok(());
    }
    // (name, colour, (epoch, value) points)
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    let series: Vec<Series> = vec![
        (
            "train -ELBO",
            BLUE,
            epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train.neg_elbo))
                .collect(),
        ),
        (
            "test -ELBO",
            RED,
            epochs
                .iter()
                .filter_map(|e| e.test.map(|t| (e.epoch as f64, t.neg_elbo)))
                .collect(),
        ),
        (
            "test reconstruction",
            GREEN,
            epochs
                .iter()
                .filter_map(|e| e.test.map(|t| (e.epoch as f64, -t.recon)))
                .collect(),
        ),
        (
            "test KL",
            MAGENTA,
            epochs
                .iter()
                .filter_map(|e| e.test.map(|t| (e.epoch as f64, t.kl)))
                .collect(),
        ),
    ];
    let ys = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| {
            Error::io("drawing", path, std::io::Error::other(e.to_string()))
        };
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let last = epochs.last().map_or(1.0, |e| e.epoch as f64).max(2.0);
        let mut chart = ChartBuilder::on(&root)
            .caption("nats per example", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(1.0..last, (lo - pad).max(0.0)..hi + pad)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| err(&e))?;
        for (name, color, pts) in series {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    crate::io::write_atomic(path, svg.as_bytes())
}

/// The pictures of a model on `data` (which must hold images), written into `dir`: prior
/// samples, inputs beside their reconstructions, an interpolation between two inputs, a
/// traversal of each latent dimension, and for a 2-D latent space the decoded manifold and a
/// scatter of test-set means coloured by label. Runs on the current rayon pool with `threads`.
/// Returns the files written.
///
/// ```
/// use elbo::{Vae, VaeConfig};
/// let data = elbo::data::shapes::generate(0, 0, 16)?;          // 28 x 28 images
/// let vae = Vae::new(VaeConfig::mnist().hidden(&[16]).latent_dim(2))?;
/// let params: Vec<f32> = vae.init_params(0);
/// let dir = tempfile::tempdir().unwrap();
/// let files = elbo::pictures::write_gallery(&vae, &params, &data, dir.path(), 0, 1)?;
/// assert!(files.iter().all(|f| f.is_file()) && !files.is_empty());
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn write_gallery<T: crate::kernels::scalar::Float>(
    vae: &crate::model::Vae,
    params: &[T],
    data: &crate::data::Dataset,
    dir: impl AsRef<Path>,
    seed: u64,
    threads: usize,
) -> Result<Vec<std::path::PathBuf>> {
    let dir = dir.as_ref();
    let is_image = data.image_shape.is_some() || {
        let s = (data.dim() as f64).sqrt().round() as usize;
        s * s == data.dim()
    };
    if !is_image && let Some(labels) = &data.labels {
        // Rows that are not images (expression profiles): the latent means coloured by label.
        let m = data.len().min(5000);
        let sub = data.head(m);
        let par = crate::kernels::pool::Parallelism::threads(threads.max(1))?;
        let means = crate::train::latent_means(vae, params, &sub, &par)?;
        let p = dir.join("latents.png");
        write_scatter(
            &p,
            &principal_plane(&means, vae.latent_dim()),
            &labels[..m],
            400,
        )?;
        return Ok(vec![p]);
    }
    let shape = data
        .image_shape
        .or_else(|| {
            let s = (data.dim() as f64).sqrt().round() as usize;
            (s * s == data.dim()).then_some((s, s))
        })
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "the data are {} values wide, not square images; pictures need images",
                data.dim()
            ))
        })?;
    let zd = vae.latent_dim();
    let to_f32 = |v: Vec<T>| {
        v.into_iter()
            .map(|x| x.as_f64() as f32)
            .collect::<Vec<f32>>()
    };
    let split = |v: Vec<f32>, w: usize| v.chunks(w).map(|c| c.to_vec()).collect::<Vec<_>>();
    let decode = |z: Vec<f64>| -> Result<Vec<Vec<f32>>> {
        let z: Vec<T> = z.into_iter().map(T::of).collect();
        Ok(split(
            to_f32(vae.decode_mean(params, &z, threads)?),
            vae.input_dim(),
        ))
    };
    let n_in = data.len().min(16);
    let inputs: Vec<T> = {
        let mut x = vec![T::zero(); n_in * data.dim()];
        data.gather(&(0..n_in).collect::<Vec<_>>(), &mut x)?;
        x
    };
    let (mu, _) = vae.encode(params, &inputs, threads)?;
    let mu: Vec<f64> = mu.iter().map(|v| v.as_f64()).collect();
    let mut written = Vec::new();
    let mut out = |name: &str, images: &[Vec<f32>], cols: usize| -> Result<()> {
        let p = dir.join(name);
        write_grid(&p, images, shape, cols, 2)?;
        written.push(p);
        Ok(())
    };
    // Prior samples.
    let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Eval, u64::MAX);
    let mut z = vec![0.0f64; 64 * zd];
    crate::rng::fill_normal(&mut rng, &mut z);
    out("samples.png", &decode(z)?, 8)?;
    // Inputs (odd rows) above their reconstructions (even rows), 8 a row.
    let recon = decode(mu.clone())?;
    let originals = split(to_f32(inputs.clone()), data.dim());
    let mut pairs = Vec::new();
    for (a, b) in originals.chunks(8).zip(recon.chunks(8)) {
        pairs.extend_from_slice(a);
        pairs.extend_from_slice(b);
    }
    out("reconstructions.png", &pairs, 8)?;
    if n_in >= 2 {
        // From input 0 to input 1 through the latent means, the inputs at both ends.
        let steps = 10;
        let mut z = Vec::with_capacity(steps * zd);
        for s in 0..steps {
            let t = s as f64 / (steps - 1) as f64;
            z.extend((0..zd).map(|j| (1.0 - t) * mu[j] + t * mu[zd + j]));
        }
        let mut row = vec![originals[0].clone()];
        row.extend(decode(z)?);
        row.push(originals[1].clone());
        out("interpolation.png", &row, steps + 2)?;
    }
    // One row per latent dimension, from -3 to 3 around input 0's mean.
    let cols = 9;
    let mut z = Vec::with_capacity(zd * cols * zd);
    for j in 0..zd {
        for c in 0..cols {
            let mut zz = mu[..zd].to_vec();
            zz[j] = -3.0 + 6.0 * c as f64 / (cols - 1) as f64;
            z.extend(zz);
        }
    }
    out("traversal.png", &decode(z)?, cols)?;
    if zd == 2 {
        let n = 15;
        let grid: Vec<f64> = (0..n)
            .flat_map(|r| {
                (0..n).flat_map(move |c| {
                    [
                        -2.5 + 5.0 * c as f64 / (n - 1) as f64,
                        2.5 - 5.0 * r as f64 / (n - 1) as f64,
                    ]
                })
            })
            .collect();
        out("manifold.png", &decode(grid)?, n)?;
        let m = data.len().min(2000);
        let mut x = vec![T::zero(); m * data.dim()];
        data.gather(&(0..m).collect::<Vec<_>>(), &mut x)?;
        let (mu, _) = vae.encode(params, &x, threads)?;
        let pts: Vec<(f32, f32)> = mu
            .chunks(2)
            .map(|c| (c[0].as_f64() as f32, c[1].as_f64() as f32))
            .collect();
        let labels = data.labels.clone().unwrap_or_default();
        let p = dir.join("latents.png");
        write_scatter(&p, &pts, &labels[..labels.len().min(m)], 400)?;
        written.push(p);
    }
    Ok(written)
}
