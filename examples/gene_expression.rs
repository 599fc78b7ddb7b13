//! scVI's model on the procedural `cells` counts, from the library: a negative binomial with
//! the softmax-times-library mean, log1p input, then the test cells' latent means and the
//! 15-nearest-neighbour accuracy of their cell types.
//!
//! cargo run --release --example gene_expression
use elbo::data::cells::{CellsConfig, generate};
use elbo::{FitOptions, Parallelism, TrainConfig, Trainer, Vae, VaeConfig};

fn main() -> elbo::Result<()> {
    let config = CellsConfig::default(); // 2,000 genes, 8 cell types
    let (train, test) = (
        generate(&config, 0, 0, 4000)?,
        generate(&config, 0, 4000, 500)?,
    );
    let vae = Vae::new(
        VaeConfig::mnist()
            .input_dim(config.genes)
            .hidden(&[128])
            .latent_dim(10)
            .likelihood("nb".parse()?) // learned dispersion per gene
            .log1p_input(true),
    )?;
    let training = TrainConfig::default().epochs(5).weight_decay(1e-6);
    let threads = Parallelism::available()?;
    let mut trainer = Trainer::<f32>::new(vae, training, &threads)?;
    let options = FitOptions::new().test(&test).on_epoch(|r, _| {
        if let Some(t) = r.test {
            println!(
                "epoch {}: test ELBO {:.1} nats per cell (KL {:.1})",
                r.epoch, -t.neg_elbo, t.kl
            );
        }
        Ok(())
    });
    trainer.fit(&train, options)?;
    let (vae, params) = (trainer.vae().clone(), trainer.params().to_vec());
    let fit = elbo::train::latent_means(&vae, &params, &train, &threads)?;
    let held = elbo::train::latent_means(&vae, &params, &test, &threads)?;
    let (train_labels, test_labels) = (
        train.labels.unwrap_or_default(),
        test.labels.unwrap_or_default(),
    );
    let acc = elbo::train::knn_accuracy(&fit, &train_labels, &held, &test_labels, 10, 15)?;
    println!(
        "15-NN accuracy of the test cells' cell types from their latent means: {:.1}%",
        100.0 * acc
    );
    Ok(())
}
