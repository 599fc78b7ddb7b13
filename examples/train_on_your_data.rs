//! Train a VAE on your own matrix (.npy or .csv, one row an example) and print each epoch.
//!
//! cargo run --release --example train_on_your_data -- points.csv
use elbo::{Likelihood, TrainConfig, Trainer, Vae, VaeConfig};

fn main() -> elbo::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: train_on_your_data FILE.npy|FILE.csv");
    let data = elbo::files::read_matrix(path.as_ref())?;
    let (train, test) = data.split_at(data.len() * 9 / 10);
    let vae = Vae::new(VaeConfig {
        input_dim: data.dim(),
        encoder_hidden: vec![64],
        latent_dim: 2,
        decoder_hidden: vec![64],
        likelihood: Likelihood::GaussianLearnedVariance,
        ..VaeConfig::mnist()
    })?;
    let config = TrainConfig {
        epochs: 20,
        batch_size: 64.min(train.len()),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::<f32>::new(vae, config, &elbo::Parallelism::threads(2)?)?;
    let options = elbo::FitOptions::new().test(&test).on_epoch(|report, _| {
        let t = report.test.expect("a test set was given");
        println!(
            "epoch {:>2}: test -ELBO {:.3} (KL {:.3})",
            report.epoch, t.neg_elbo, t.kl
        );
        Ok(())
    });
    trainer.fit(&train, options)?;
    let (mu, _) = trainer.vae().encode(
        trainer.params(),
        &test.to_array::<f32>().into_raw_vec_and_offset().0,
        1,
    )?;
    println!("first test example's latent mean: {:?}", &mu[..2]);
    Ok(())
}
