//! Training with bf16 products (`Precision::Bf16`, `--precision bf16`): reproducible whatever
//! the thread count, close to f32 training, evaluated in f32, and refused for f64 models.
//! The products themselves are held to their plain reference in the kernels' unit tests, on
//! every path this CPU has (AMX, AVX512-BF16, rounding).

use elbo::data::shapes;
use elbo::{Dataset, Precision, TrainConfig, Trainer, Vae, VaeConfig};

fn data() -> (Dataset, Dataset) {
    (
        shapes::generate(5, 0, 1500).unwrap(),
        shapes::generate(5, 1500, 300).unwrap(),
    )
}

/// Trains the MNIST-sized model for 2 epochs on `shapes`; returns the trainer and the last
/// epoch's test terms.
fn train(threads: usize, precision: Precision) -> (Trainer<f32>, elbo::EpochTerms) {
    let config = TrainConfig::default()
        .epochs(2)
        .seed(11)
        .precision(precision);
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let mut t =
        Trainer::<f32>::new(vae, config, &elbo::Parallelism::threads(threads).unwrap()).unwrap();
    let (train, test) = data();
    let reports = t.fit(&train, elbo::FitOptions::new().test(&test)).unwrap();
    (t, reports.last().unwrap().test.unwrap())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn bf16_training_is_bit_identical_on_one_or_two_threads() {
    let (one, e1) = train(1, Precision::Bf16);
    let (two, e2) = train(2, Precision::Bf16);
    assert_eq!(bits(one.params()), bits(two.params()));
    assert_eq!(e1, e2);
}

#[test]
fn bf16_training_stays_close_to_f32_and_differs_from_it() {
    let (f32_run, f) = train(2, Precision::F32);
    let (bf16_run, b) = train(2, Precision::Bf16);
    // The products really were rounded: the parameters differ.
    assert_ne!(bits(f32_run.params()), bits(bf16_run.params()));
    // ... but the model learned the same: test -ELBO within 1% (measured: well inside).
    let (lf, lb) = (f.neg_elbo, b.neg_elbo);
    assert!(
        (lf - lb).abs() <= 0.01 * lf.abs(),
        "test -ELBO f32 {lf} vs bf16 {lb}"
    );
}

/// Evaluation runs in f32 whatever the training products were: evaluating the trained
/// parameters in a fresh f32 trainer gives the same bits.
#[test]
fn a_bf16_run_is_evaluated_in_f32() {
    let (mut bf16_run, _) = train(2, Precision::Bf16);
    let (_, test) = data();
    let params = bf16_run.params().to_vec();
    let config = TrainConfig::default().epochs(2).seed(11);
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let mut plain =
        Trainer::<f32>::with_params(vae, config, params, &elbo::Parallelism::threads(2).unwrap())
            .unwrap();
    let e_bf16 = bf16_run.evaluate(&test).unwrap();
    let e_f32 = plain.evaluate(&test).unwrap();
    assert_eq!(e_bf16.terms, e_f32.terms);
}

#[test]
fn bf16_is_refused_for_an_f64_model() {
    let config = TrainConfig::default().precision(Precision::Bf16);
    let vae = Vae::new(VaeConfig::mnist()).unwrap();
    let err = Trainer::<f64>::new(vae, config, &elbo::Parallelism::threads(1).unwrap())
        .err()
        .expect("an f64 model with bf16 products is refused");
    assert!(err.to_string().contains("bf16"), "{err}");
}

/// `x` rounded to the nearest bfloat16 (ties to even), written here apart from the library's.
fn round_bf16(x: f32) -> f64 {
    let b = x.to_bits();
    let (down, up) = (b & 0xffff_0000, (b & 0xffff_0000) + 0x1_0000);
    let (dd, du) = (
        (x as f64 - f32::from_bits(down) as f64).abs(),
        (f32::from_bits(up) as f64 - x as f64).abs(),
    );
    let pick = if dd < du || (dd == du && (down >> 16) & 1 == 0) {
        down
    } else {
        up
    };
    f32::from_bits(pick) as f64
}

/// sum_p a(i, p) b(p, j) in f64, of `round`ed operands.
fn product(
    (m, n, k): (usize, usize, usize),
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
    round: fn(f32) -> f64,
) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| round(a(i, p)) * round(b(p, j))).sum();
        }
    }
    c
}

/// A dense layer in bf16 computes all three of its products from bf16 operands: y = x W,
/// dL/dW = x^T G and dL/dx = G W^T each match the rounded operands' exact products to f32's
/// summation error, and lie measurably off the unrounded ones (so a product left in f32 fails).
#[test]
fn a_dense_layer_in_bf16_rounds_the_operands_of_all_three_products() {
    use elbo::model::{Dense, Layout};
    use rand::{RngExt, SeedableRng};
    let (rows, n_in, n_out) = (8, 40, 24);
    let mut layout = Layout::new();
    let layer = Dense::new(&mut layout, "d", n_in, n_out);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut draw = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    let params = draw(layer.weight.len() + layer.bias.len());
    let (x, g) = (draw(rows * n_in), draw(rows * n_out));
    let (w, bias) = (
        layer.weight.get(&params).unwrap(),
        layer.bias.get(&params).unwrap(),
    );
    let mut y = vec![0.0f32; rows * n_out];
    layer
        .forward_in(Precision::Bf16, &params, &x, &mut y, rows, 1)
        .unwrap();
    let mut grads = vec![0.0f32; params.len()];
    let mut dx = vec![0.0f32; rows * n_in];
    layer
        .backward_in(
            Precision::Bf16,
            &params,
            &x,
            &g,
            &mut grads,
            Some(&mut dx),
            rows,
            1,
        )
        .unwrap();
    let exact = |v: f32| v as f64;
    /// A product's reference, given how its operands are rounded.
    type Reference<'a> = Box<dyn Fn(fn(f32) -> f64) -> Vec<f64> + 'a>;
    let checks: [(&str, Vec<f32>, Reference); 3] = [
        (
            "y = x W + b",
            y.iter()
                .zip(bias.iter().cycle())
                .map(|(y, b)| y - b)
                .collect(),
            Box::new(|r| {
                product(
                    (rows, n_out, n_in),
                    |i, p| x[i * n_in + p],
                    |p, j| w[p * n_out + j],
                    r,
                )
            }),
        ),
        (
            "dL/dW = x^T G",
            layer.weight.get(&grads).unwrap().to_vec(),
            Box::new(|r| {
                product(
                    (n_in, n_out, rows),
                    |i, p| x[p * n_in + i],
                    |p, j| g[p * n_out + j],
                    r,
                )
            }),
        ),
        (
            "dL/dx = G W^T",
            dx.clone(),
            Box::new(|r| {
                product(
                    (rows, n_in, n_out),
                    |i, p| g[i * n_out + p],
                    |p, j| w[j * n_out + p],
                    r,
                )
            }),
        ),
    ];
    for (name, got, reference) in checks {
        let (rounded, unrounded) = (reference(round_bf16), reference(exact));
        let off_rounded = got
            .iter()
            .zip(&rounded)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let off_exact = got
            .iter()
            .zip(&unrounded)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            off_rounded < 1e-5,
            "{name}: {off_rounded} from the bf16 operands' product"
        );
        assert!(
            off_exact > 1e-3,
            "{name}: only {off_exact} from the f32 product, not rounded?"
        );
    }
}
