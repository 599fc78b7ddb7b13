//! `cells`: a procedural single-cell count set, the gene-expression analogue of `shapes`.
//!
//! The generative model, all drawn from the seed:
//! - K cell types. Every gene has a baseline log-expression b_g ~ N(0, `spread`^2); each type
//!   switches on its own program, a random `program_fraction` of the genes whose
//!   log-expression rises by a fold change ~ N(`fold`, 0.5^2). The type's expression profile
//!   is rho_k = softmax(b + program_k).
//! - Cell i has a type k_i (uniform) and a library size l_i ~ LogNormal(ln `library`, 0.5^2).
//! - Count x_ig ~ NB(mean l_i rho_{k_i g}, inverse dispersion theta_g), drawn as a Gamma-Poisson
//!   mixture, with theta_g ~ LogNormal(ln 2, 0.5^2) per gene; with zero inflation, each count is
//!   then replaced by 0 with probability pi_g ~ Uniform(0, `zero_inflation`).
//!
//! Cell i is a pure function of (seed, i), so any slice of the set can be made on its own, in
//! parallel, with the same numbers whatever the thread count. The true parameters
//! ([`CellsTruth`]) are a function of the seed alone.

use rand::RngExt;
use rand_distr::{Distribution, Gamma, LogNormal, Normal, Poisson};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::csr::CsrMatrix;
use crate::data::dataset::{Dataset, Factors};
use crate::error::{Error, Result};
use crate::rng::{Purpose, stream};

/// The shape of a `cells` set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellsConfig {
    /// Genes per cell.
    pub genes: usize,
    /// Cell types K.
    pub types: usize,
    /// Median library size (total count per cell).
    pub library: f64,
    /// Standard deviation of the genes' baseline log-expression.
    pub spread: f64,
    /// Share of the genes in each type's program.
    pub program_fraction: f64,
    /// Mean log fold change of a program's genes.
    pub fold: f64,
    /// Largest per-gene zero-inflation probability (0: none).
    pub zero_inflation: f64,
}

impl Default for CellsConfig {
    /// 2,000 genes, 8 types, median library 500, no zero inflation: about 5% of the counts
    /// are nonzero, as in 10x data.
    fn default() -> Self {
        CellsConfig {
            genes: 2000,
            types: 8,
            library: 500.0,
            spread: 3.0,
            program_fraction: 0.05,
            fold: 2.5,
            zero_inflation: 0.0,
        }
    }
}

impl CellsConfig {
    fn validate(&self) -> Result<()> {
        if self.genes == 0 || self.genes > u32::MAX as usize {
            return Err(Error::config(
                "cells genes",
                self.genes,
                "must be between 1 and 2^32 - 1",
            ));
        }
        if self.types == 0 || self.types > 255 {
            return Err(Error::config(
                "cells types",
                self.types,
                "must be between 1 and 255",
            ));
        }
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.library) && self.library > 0.0 && ok(self.spread) && ok(self.fold)) {
            return Err(Error::config(
                "cells settings",
                format!("{self:?}"),
                "library must be > 0, spread and fold finite and >= 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.program_fraction)
            || !(0.0..1.0).contains(&self.zero_inflation)
        {
            return Err(Error::config(
                "cells settings",
                format!("{self:?}"),
                "program fraction must lie in [0, 1], zero inflation in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// The true parameters behind a `cells` set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellsTruth {
    /// Each type's expression profile rho_k (K rows of G, each summing to 1).
    pub profiles: Vec<Vec<f64>>,
    /// Inverse dispersion per gene.
    pub theta: Vec<f64>,
    /// Zero-inflation probability per gene.
    pub zero_inflation: Vec<f64>,
}

/// The true parameters for `seed`.
pub fn truth(config: &CellsConfig, seed: u64) -> Result<CellsTruth> {
    config.validate()?;
    // Stream index u64::MAX: the parameters, apart from every cell's stream.
    let mut rng = stream(seed, Purpose::Data, u64::MAX);
    let g = config.genes;
    let normal = |m: f64, s: f64| Normal::new(m, s).expect("finite, s >= 0");
    let base: Vec<f64> = (0..g)
        .map(|_| normal(0.0, config.spread).sample(&mut rng))
        .collect();
    let fold = normal(config.fold, 0.5);
    let profiles = (0..config.types)
        .map(|_| {
            let mut a = base.clone();
            for v in &mut a {
                if rng.random::<f64>() < config.program_fraction {
                    *v += fold.sample(&mut rng);
                }
            }
            let max = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = a.iter().map(|v| (v - max).exp()).sum();
            a.iter().map(|v| (v - max).exp() / sum).collect()
        })
        .collect();
    let theta_dist = LogNormal::new(2f64.ln(), 0.5).expect("valid");
    let theta = (0..g).map(|_| theta_dist.sample(&mut rng)).collect();
    let zero_inflation = (0..g)
        .map(|_| rng.random::<f64>() * config.zero_inflation)
        .collect();
    Ok(CellsTruth {
        profiles,
        theta,
        zero_inflation,
    })
}

/// The genes' names: gene0, gene1, ...
fn gene_names(genes: usize) -> Vec<String> {
    (0..genes).map(|g| format!("gene{g}")).collect()
}

/// One cell's type, library size and counts (as sparse nonzeros).
fn draw_cell(config: &CellsConfig, truth: &CellsTruth, seed: u64, index: u64) -> Cell {
    let mut rng = stream(seed, Purpose::Data, index);
    let k = rng.random_range(0..config.types);
    let library = LogNormal::new(config.library.ln(), 0.5)
        .expect("valid")
        .sample(&mut rng);
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for (gene, (&rho, &theta)) in truth.profiles[k].iter().zip(&truth.theta).enumerate() {
        let mu = library * rho;
        // Gamma(theta, mu/theta) then Poisson: the NB's Gamma-Poisson mixture.
        let rate = Gamma::new(theta, mu / theta).map_or(0.0, |d| d.sample(&mut rng));
        let count = if rate > 0.0 {
            Poisson::new(rate).map_or(0.0, |d| d.sample(&mut rng))
        } else {
            0.0
        };
        let dropped =
            config.zero_inflation > 0.0 && rng.random::<f64>() < truth.zero_inflation[gene];
        if count > 0.0 && !dropped {
            idx.push(gene as u32);
            val.push(count.min((1u32 << 24) as f64 - 1.0) as f32);
        }
    }
    (k as u8, library, idx, val)
}

/// One drawn cell: its type, library size, and nonzero counts' genes and values.
type Cell = (u8, f64, Vec<u32>, Vec<f32>);

/// Hands cells `first..first + n` to `each` in order. They are drawn in parallel in chunks
/// of 8,192, so memory holds one chunk whatever n is.
fn for_each_cell(
    config: &CellsConfig,
    truth: &CellsTruth,
    seed: u64,
    first: u64,
    n: u64,
    mut each: impl FnMut(&Cell) -> Result<()>,
) -> Result<()> {
    const CHUNK: u64 = 8192;
    let mut start = 0u64;
    while start < n {
        let end = (start + CHUNK).min(n);
        let cells: Vec<Cell> = (start..end)
            .into_par_iter()
            .map(|i| draw_cell(config, truth, seed, first + i))
            .collect();
        cells.iter().try_for_each(&mut each)?;
        start = end;
    }
    Ok(())
}

/// Cells `first..first + n` for `seed`: sparse counts, labels (the type) and the factors
/// "type" and "library" (the drawn library size, before sampling).
///
/// ```
/// use elbo::data::cells::{CellsConfig, generate};
/// let config = CellsConfig { genes: 50, types: 3, ..CellsConfig::default() };
/// let data = generate(&config, 7, 0, 20)?;
/// assert_eq!((data.len(), data.dim()), (20, 50));
/// assert_eq!(data.labels.as_ref().unwrap().len(), 20);
/// // A cell depends only on (seed, index): cells 10.. made alone are the same cells.
/// let tail = generate(&config, 7, 10, 10)?;
/// assert_eq!(tail.row(0), data.row(10));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn generate(config: &CellsConfig, seed: u64, first: u64, n: usize) -> Result<Dataset> {
    if n == 0 {
        return Err(Error::config("cells", 0, "must be at least 1"));
    }
    let truth = truth(config, seed)?;
    let mut m = CsrMatrix::with_cols(config.genes)?;
    let mut labels = Vec::with_capacity(n);
    let mut factors = Vec::with_capacity(2 * n);
    for_each_cell(
        config,
        &truth,
        seed,
        first,
        n as u64,
        |(k, library, idx, val)| {
            m.push_row(idx, val)?;
            labels.push(*k);
            factors.extend([*k as f64, *library]);
            Ok(())
        },
    )?;
    let mut data = Dataset::from_csr(m)?;
    data.labels = Some(labels);
    data.factors = Some(Factors::new(
        vec!["type".into(), "library".into()],
        factors,
    )?);
    data.feature_names = Some(gene_names(config.genes));
    data.label_names = Some((0..config.types).map(|k| format!("type{k}")).collect());
    Ok(data)
}

/// Writes cells `first..first + n` for `seed` straight to an elbo matrix file
/// ([`crate::data::store`]), sparse, with their types as labels, in bounded memory: one chunk
/// of cells at a time, whatever `n` is. The rows are those [`generate`] makes.
pub fn write_store(
    config: &CellsConfig,
    seed: u64,
    first: u64,
    n: u64,
    path: impl AsRef<std::path::Path>,
) -> Result<crate::data::store::StoreHeader> {
    use crate::data::store::{StoreKind, StoreWriter};
    if n == 0 {
        return Err(Error::config("cells", 0, "must be at least 1"));
    }
    let truth = truth(config, seed)?;
    let mut w = StoreWriter::create(path, StoreKind::Sparse, config.genes)?;
    w.set_column_names(&gene_names(config.genes))?;
    for_each_cell(config, &truth, seed, first, n, |(k, _, idx, val)| {
        w.push_sparse(idx, val, Some(*k))
    })?;
    w.finish()
}
