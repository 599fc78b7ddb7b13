//! One flat buffer for all parameters (and, with the same layout, gradients and optimizer
//! state), with named views into it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A named tensor's place in a flat buffer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Dotted name, e.g. `encoder.0.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The index range it covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A handle to one tensor of a [`Layout`]: a range of the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorId {
    offset: usize,
    len: usize,
}

impl TensorId {
    /// The range of the flat buffer.
    #[inline]
    pub fn range(self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
    /// Number of elements.
    #[inline]
    pub fn len(self) -> usize {
        self.len
    }
    /// Whether it has no elements.
    #[inline]
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
    /// This tensor's view of `buf`, or [`Error::Shape`] if `buf` is too short to hold it.
    pub fn get<T>(self, buf: &[T]) -> Result<&[T]> {
        let n = buf.len();
        buf.get(self.range()).ok_or_else(|| self.too_short(n))
    }
    /// This tensor's mutable view of `buf`, or [`Error::Shape`] if `buf` is too short.
    pub fn get_mut<T>(self, buf: &mut [T]) -> Result<&mut [T]> {
        let n = buf.len();
        buf.get_mut(self.range()).ok_or_else(|| self.too_short(n))
    }
    fn too_short(self, len: usize) -> Error {
        Error::shape(
            "parameter buffer",
            format!("at least {} values", self.offset + self.len),
            len,
        )
    }
    /// This tensor's view of a buffer already checked to hold it.
    #[inline]
    pub(crate) fn of<T>(self, buf: &[T]) -> &[T] {
        &buf[self.range()]
    }
    /// This tensor's mutable view of a buffer already checked to hold it.
    #[inline]
    pub(crate) fn of_mut<T>(self, buf: &mut [T]) -> &mut [T] {
        &mut buf[self.range()]
    }
}

/// The names, shapes and offsets of every tensor in a flat buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    len: usize,
}

impl Layout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a tensor and returns its handle.
    ///
    /// ```
    /// use elbo::model::Layout;
    /// let mut layout = Layout::new();
    /// let w = layout.push("w", &[2, 3]);
    /// let b = layout.push("b", &[3]);
    /// let params: Vec<f32> = (0..layout.len()).map(|i| i as f32).collect();
    /// assert_eq!(b.get(&params)?, &[6.0, 7.0, 8.0]);
    /// assert!(w.get(&params[..4]).is_err());              // too short a buffer
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> TensorId {
        let spec = TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset: self.len,
        };
        let id = TensorId {
            offset: spec.offset,
            len: spec.len(),
        };
        self.len += spec.len();
        self.tensors.push(spec);
        id
    }
    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Every tensor, in buffer order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }
    /// The tensor of that name.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
