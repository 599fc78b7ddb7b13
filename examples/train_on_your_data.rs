//! Train a VAE on your own matrix (.npy or .csv, one row an example), print each epoch, then
//! encode the test rows with the trained model.
//!
//! cargo run --release --features io --example train_on_your_data -- points.csv
use elbo::{FitOptions, Likelihood, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};

fn main() -> elbo::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: train_on_your_data FILE.npy|FILE.csv");
        std::process::exit(2);
    };
    let data = elbo::files::read_matrix(&path)?;
    let (train, test) = data.split_at(data.len() * 9 / 10);
    let vae = Vae::new(
        VaeConfig::mnist()
            .input_dim(data.dim())
            .encoder_hidden(vec![64])
            .latent_dim(2)
            .decoder_hidden(vec![64])
            .likelihood(Likelihood::GaussianLearnedVariance),
    )?;
    let config = TrainConfig::default()
        .epochs(20)
        .batch_size(64.min(train.len()));
    let mut trainer = Trainer::<f32>::new(vae, config, &Parallelism::available()?)?;
    let options = FitOptions::new().test(&test).on_epoch(|report, _| {
        if let Some(t) = report.test {
            println!(
                "epoch {:>2}: test -ELBO {:.3} (KL {:.3})",
                report.epoch, t.neg_elbo, t.kl
            );
        }
        Ok(())
    });
    trainer.fit(&train, options)?;
    let model = trainer.into_model()?;
    let q = model.encode(test.to_array::<f32>().view())?;
    println!("first test example's latent mean: {}", q.means.row(0));
    Ok(())
}
