//! One file per subcommand.

pub(crate) mod convert;
pub(crate) mod encode;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod gradcheck;
pub(crate) mod identities;
pub(crate) mod pictures;
pub(crate) mod reconstruct;
pub(crate) mod sample;
pub(crate) mod train;
