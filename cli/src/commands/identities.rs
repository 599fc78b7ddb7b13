//! `elbo identities`: the ELBO three ways on an exact linear-Gaussian model.

#[derive(clap::Args, Debug)]
pub(crate) struct IdentitiesArgs {
    /// Seed of the model, the point and the draws.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Monte-Carlo draws.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) draws: usize,
}
