//! Model files in the safetensors format: one tensor per named parameter tensor, the model's
//! configuration (and anything else the caller adds) as JSON in the metadata.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::kernels::scalar::Float;
use crate::model::{CustomLikelihood, LikelihoodChoice, LikelihoodInfo, Vae, VaeConfig};

/// Metadata key holding the [`VaeConfig`] as JSON.
pub const CONFIG_KEY: &str = "elbo.vae_config";

/// `values` as little-endian bytes: on a little-endian machine their own memory, not a copy,
/// so that saving a checkpoint does not hold a second copy of the parameters and state.
fn le_bytes<T: Float>(values: &[T]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        return std::borrow::Cow::Borrowed(bytemuck::cast_slice(values));
    }
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    for v in values {
        if std::mem::size_of::<T>() == 4 {
            out.extend_from_slice(&(v.as_f64() as f32).to_le_bytes());
        } else {
            out.extend_from_slice(&v.as_f64().to_le_bytes());
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Name of the tensor holding the optimizer's state (Adam: first then second moments).
pub const OPTIMIZER_STATE: &str = "optimizer.state";

/// Writes `params` of `vae` to `path` atomically; `extra` goes into the metadata beside the
/// configuration.
///
/// ```
/// use elbo::train::checkpoint;
/// use elbo::{Vae, VaeConfig};
/// let vae = Vae::new(VaeConfig::mnist().input_dim(4).encoder_hidden(vec![]).latent_dim(1).decoder_hidden(vec![]))?;
/// let params: Vec<f32> = vae.init_params(1);
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("m.safetensors");
/// checkpoint::save(&path, &vae, &params, &[("note", "hello".into())])?;
/// let back = checkpoint::load::<f64>(&path)?;                 // read back in either precision
/// assert_eq!(back.vae.config(), vae.config());
/// assert_eq!(back.metadata["note"], "hello");
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn save<T: Float>(
    path: impl AsRef<Path>,
    vae: &Vae,
    params: &[T],
    extra: &[(&str, String)],
) -> Result<()> {
    let path = path.as_ref();
    save_with_state(path, vae, params, None, extra)
}

/// Like [`save`], with the optimizer's flat state as the tensor [`OPTIMIZER_STATE`].
pub fn save_with_state<T: Float>(
    path: impl AsRef<Path>,
    vae: &Vae,
    params: &[T],
    optimizer_state: Option<&[T]>,
    extra: &[(&str, String)],
) -> Result<()> {
    let path = path.as_ref();
    if params.len() != vae.num_params() {
        return Err(Error::shape("parameters", vae.num_params(), params.len()));
    }
    let dtype = if std::mem::size_of::<T>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let bytes: Vec<(String, std::borrow::Cow<'_, [u8]>, Vec<usize>)> = vae
        .layout()
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                le_bytes(&params[t.range()]),
                t.shape.clone(),
            )
        })
        .chain(
            optimizer_state.map(|st| (OPTIMIZER_STATE.to_string(), le_bytes(st), vec![st.len()])),
        )
        .collect();
    let views = bytes
        .iter()
        .map(|(name, b, shape)| {
            TensorView::new(dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::malformed(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    let cfg = serde_json::to_string(vae.config()).expect("configuration serialises");
    meta.insert(CONFIG_KEY.to_string(), cfg);
    if let LikelihoodChoice::Custom(c) = &vae.likelihood.choice {
        meta.insert(
            CUSTOM_LIKELIHOOD_KEY.to_string(),
            LikelihoodInfo::name(&**c),
        );
    }
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    let (header, data_at) = sorted_header(&data, path)?;
    crate::io::write_atomic_parts(path, &[&header, &data[data_at..]])
}

/// The header of the safetensors file `file` with its JSON keys in sorted order, and where the
/// file's data section starts: the file to write is that header, then the data section as it
/// is. `safetensors` writes the metadata from a `HashMap`, whose order changes from run to run;
/// sorted, two identical runs write identical bytes. The data section is untouched (its offsets
/// are relative to it), and the header is padded with spaces to a multiple of 8 bytes, as the
/// format allows.
fn sorted_header(file: &[u8], path: &Path) -> Result<(Vec<u8>, usize)> {
    let bad = |r: &str| Error::malformed(path, format!("writing the header: {r}"));
    let len = file
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
        .ok_or_else(|| bad("too short"))?;
    let header = file.get(8..8 + len).ok_or_else(|| bad("truncated"))?;
    // serde_json's map (without `preserve_order`) is a BTreeMap: keys come out sorted.
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let mut sorted = serde_json::to_vec(&value).map_err(|e| bad(&e.to_string()))?;
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + sorted.len());
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    Ok((out, 8 + len))
}

/// A loaded model file.
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    /// The model's structure.
    pub vae: Vae,
    /// Its parameters, converted to `T`.
    pub params: Vec<T>,
    /// Every metadata entry.
    pub metadata: HashMap<String, String>,
    /// The optimizer's flat state, if the file holds one.
    pub optimizer_state: Option<Vec<T>>,
}

fn read_tensor<T: Float>(
    t: &safetensors::tensor::TensorView<'_>,
    out: &mut [T],
) -> std::result::Result<(), String> {
    match t.dtype() {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(t.data().chunks_exact(4)) {
                *o = T::of(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64);
            }
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(t.data().chunks_exact(8)) {
                *o = T::of(f64::from_le_bytes(c.try_into().expect("8 bytes")));
            }
        }
        other => return Err(format!("type {other:?}, expected F32 or F64")),
    }
    Ok(())
}

/// Like [`load`], refusing a file whose architecture differs from `expected`.
///
/// ```
/// use elbo::train::checkpoint;
/// use elbo::{Vae, VaeConfig};
/// let config = VaeConfig::mnist().input_dim(4).hidden(&[]).latent_dim(1);
/// let vae = Vae::new(config.clone())?;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("m.safetensors");
/// checkpoint::save(&path, &vae, &vae.init_params::<f32>(0), &[])?;
/// assert!(checkpoint::load_expecting::<f32>(&path, &config).is_ok());
/// assert!(checkpoint::load_expecting::<f32>(&path, &config.latent_dim(2)).is_err());
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn load_expecting<T: Float>(path: impl AsRef<Path>, expected: &VaeConfig) -> Result<Loaded<T>> {
    let path = path.as_ref();
    let loaded = load::<T>(path)?;
    if loaded.vae.config() != expected {
        let describe = |c: &VaeConfig| {
            format!(
                "{}-{:?}-{}-{:?}-{}, {}, {}",
                c.input_dim,
                c.encoder_hidden,
                c.latent_dim,
                c.decoder_hidden,
                c.input_dim,
                c.activation,
                c.likelihood
            )
        };
        return Err(Error::Shape {
            what: format!("model file {}", path.display()),
            expected: describe(expected),
            got: describe(loaded.vae.config()),
        });
    }
    Ok(loaded)
}

/// Only the metadata of a model file.
///
/// ```
/// use elbo::train::checkpoint;
/// use elbo::{Vae, VaeConfig};
/// let vae = Vae::new(VaeConfig::mnist().input_dim(4).hidden(&[]).latent_dim(1))?;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("m.safetensors");
/// checkpoint::save(&path, &vae, &vae.init_params::<f32>(0), &[("run", "a".into())])?;
/// let meta = checkpoint::metadata(&path)?;            // no parameters read
/// assert_eq!(meta["run"], "a");
/// assert!(meta.contains_key(checkpoint::CONFIG_KEY));
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::malformed(path, format!("not a safetensors file ({e})")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Metadata key naming the user's likelihood of a model built with
/// [`Vae::with_likelihood`].
pub const CUSTOM_LIKELIHOOD_KEY: &str = "elbo.custom_likelihood";

/// Reads a model file written by [`save`] (in f32 or f64), converting to `T`. A model with a
/// user's likelihood needs [`load_with_likelihood`].
pub fn load<T: Float>(path: impl AsRef<Path>) -> Result<Loaded<T>> {
    load_as(path.as_ref(), None)
}

/// Reads a model file whose model was built with [`Vae::with_likelihood`], given the same
/// likelihood (its name must match the one in the file).
pub fn load_with_likelihood<T: Float>(
    path: impl AsRef<Path>,
    likelihood: Arc<dyn CustomLikelihood>,
) -> Result<Loaded<T>> {
    load_as(path.as_ref(), Some(likelihood))
}

fn load_as<T: Float>(path: &Path, custom: Option<Arc<dyn CustomLikelihood>>) -> Result<Loaded<T>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let bad = |r: String| Error::malformed(path, r);
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let cfg_json = metadata.get(CONFIG_KEY).ok_or_else(|| {
        bad(format!(
            "no '{CONFIG_KEY}' in its metadata: not an elbo model"
        ))
    })?;
    let config: VaeConfig = serde_json::from_str(cfg_json)
        .map_err(|e| bad(format!("bad model configuration ({e})")))?;
    let vae = match (metadata.get(CUSTOM_LIKELIHOOD_KEY), custom) {
        (None, None) => Vae::new(config),
        (Some(name), Some(lik)) if *name == LikelihoodInfo::name(&*lik) => {
            Vae::with_likelihood(config, lik)
        }
        (Some(name), _) => {
            return Err(bad(format!(
                "the model uses the custom likelihood '{name}': load it with \
                 load_with_likelihood and that likelihood"
            )));
        }
        (None, Some(lik)) => {
            return Err(bad(format!(
                "the model uses its built-in likelihood, not '{}'",
                LikelihoodInfo::name(&*lik)
            )));
        }
    }
    .map_err(|e| bad(format!("bad model configuration ({e})")))?;
    // Refuse before allocating: the file must hold at least 4 bytes per parameter.
    if vae.num_params().saturating_mul(4) > bytes.len() {
        return Err(bad(format!(
            "its configuration needs {} parameters, more than the file's {} bytes can hold",
            vae.num_params(),
            bytes.len()
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut params = vec![T::zero(); vae.num_params()];
    for spec in vae.layout().tensors() {
        let t = st
            .tensor(&spec.name)
            .map_err(|_| bad(format!("tensor '{}' is missing", spec.name)))?;
        if t.shape() != spec.shape.as_slice() {
            return Err(bad(format!(
                "tensor '{}' has shape {:?}, the model needs {:?}",
                spec.name,
                t.shape(),
                spec.shape
            )));
        }
        read_tensor(&t, &mut params[spec.range()])
            .map_err(|r| bad(format!("tensor '{}' has {r}", spec.name)))?;
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("parameter {i} is not finite")));
    }
    let optimizer_state = match st.tensor(OPTIMIZER_STATE) {
        Ok(t) => {
            let mut state = vec![T::zero(); t.shape().iter().product()];
            read_tensor(&t, &mut state).map_err(|r| bad(format!("the optimizer state has {r}")))?;
            Some(state)
        }
        Err(_) => None,
    };
    Ok(Loaded {
        vae,
        params,
        metadata,
        optimizer_state,
    })
}
