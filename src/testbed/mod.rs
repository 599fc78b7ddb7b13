//! Models whose every quantity is known in closed form, for checking the objectives against
//! exact answers. It sits above [`crate::objective`] and uses it; nothing below imports it.

pub mod linear_gaussian;
