//! Data-parallel training, in one process: members of an [`InProcess`] group (one thread and
//! one trainer each) stand in for MPI processes. A run cut into S shards gives the same bits on
//! 1, 2 and 4 members, resumes bit-identically on a different number of them, equals an
//! unsharded run when S = 1, and refuses members that disagree. The same runs under `mpirun`
//! are in cli/tests/mpi.rs.

use std::sync::mpsc;
use std::time::Duration;

use elbo::data::cells::{CellsConfig, generate};
use elbo::{
    Dataset, Error, FitOptions, InProcess, Parallelism, TrainConfig, Trainer, Vae, VaeConfig,
};

fn cells() -> (Dataset, Dataset) {
    let config = CellsConfig {
        genes: 150,
        ..CellsConfig::default()
    };
    let data = generate(&config, 3, 0, 400).unwrap();
    data.split_at(360)
}

fn images() -> (Dataset, Dataset) {
    let data = elbo::data::shapes::generate(5, 0, 300).unwrap();
    data.split_at(260)
}

/// A small scVI-like model: log1p input, dropout, a count likelihood.
fn counts_model(dim: usize, likelihood: &str, batch_norm: bool) -> Vae {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(dim)
            .hidden(&[24])
            .latent_dim(3)
            .likelihood(likelihood.parse().unwrap())
            .log1p_input(true)
            .batch_norm(batch_norm)
            .dropout(0.1),
    )
    .unwrap()
}

fn count_vae(dim: usize) -> Vae {
    counts_model(dim, "zinb", false)
}

fn image_vae(dim: usize) -> Vae {
    Vae::new(
        VaeConfig::mnist()
            .input_dim(dim)
            .hidden(&[32])
            .latent_dim(4),
    )
    .unwrap()
}

type Bits = Vec<u32>;

fn bits(t: &Trainer<f32>) -> Bits {
    t.params().iter().map(|v| v.to_bits()).collect()
}

/// Runs `members` trainers in their own threads, each one of a group, and returns every
/// member's outcome; fails the test instead of hanging if any member does not finish.
fn in_group<R: Send + 'static>(
    members: usize,
    each: impl Fn(InProcess) -> R + Send + Sync + Clone + 'static,
) -> Vec<R> {
    let (tx, rx) = mpsc::channel();
    for m in InProcess::group(members).unwrap() {
        let (tx, each) = (tx.clone(), each.clone());
        std::thread::spawn(move || {
            let rank = elbo::Collective::rank(&m);
            let _ = tx.send((rank, each(m)));
        });
    }
    drop(tx);
    let mut out: Vec<(usize, R)> = (0..members)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(300))
                .expect("a member of the group did not finish")
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    out.into_iter().map(|(_, r)| r).collect()
}

/// A one-thread trainer that is member `m` of a group: what every process of a group runs.
fn member_trainer(vae: Vae, config: TrainConfig, m: InProcess) -> Trainer<f32> {
    let mut t = Trainer::<f32>::new(vae, config, &Parallelism::threads(1).unwrap()).unwrap();
    t.set_group(Box::new(m)).unwrap();
    t
}

fn train_in_group(
    members: usize,
    vae: fn(usize) -> Vae,
    data: fn() -> (Dataset, Dataset),
    config: TrainConfig,
) -> Vec<(Bits, u64)> {
    in_group(members, move |m| {
        let (train, test) = data();
        let mut t = member_trainer(vae(train.dim()), config.clone(), m);
        let reports = t.fit(&train, FitOptions::new().test(&test)).unwrap();
        (
            bits(&t),
            reports.last().unwrap().test.unwrap().neg_elbo.to_bits(),
        )
    })
}

#[test]
fn four_shards_give_the_same_bits_on_one_two_and_four_members() {
    let config = TrainConfig::default()
        .epochs(2)
        .batch_size(36)
        .shards(Some(4))
        .seed(11);
    for (what, vae, data) in [
        (
            "cells, ZINB with dropout",
            count_vae as fn(usize) -> Vae,
            cells as fn() -> _,
        ),
        ("shapes, Bernoulli", image_vae, images),
    ] {
        let one = train_in_group(1, vae, data, config.clone());
        for members in [2, 4] {
            let many = train_in_group(members, vae, data, config.clone());
            for (rank, got) in many.iter().enumerate() {
                assert!(
                    got == &one[0],
                    "{what}: member {rank} of {members} differs from one process"
                );
            }
        }
        // Without a group, the sharded run is the same too: the group changes nothing.
        let (train, test) = data();
        let mut alone = Trainer::<f32>::new(
            vae(train.dim()),
            config.clone(),
            &Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        let reports = alone.fit(&train, FitOptions::new().test(&test)).unwrap();
        assert_eq!(
            (bits(&alone), reports[1].test.unwrap().neg_elbo.to_bits()),
            one[0],
            "{what}: alone on two threads"
        );
    }
}

#[test]
fn the_importance_weighted_bound_trains_sharded_on_any_number_of_members() {
    let config = TrainConfig::default()
        .epochs(1)
        .batch_size(40)
        .shards(Some(4))
        .iw_samples(Some(5));
    let one = train_in_group(1, image_vae, images, config.clone());
    let two = train_in_group(2, image_vae, images, config);
    assert_eq!(one[0], two[0]);
    assert_eq!(one[0], two[1]);
}

#[test]
fn one_shard_is_the_unsharded_run() {
    let (train, _) = images();
    let run = |shards| {
        let mut t = Trainer::<f32>::new(
            image_vae(train.dim()),
            TrainConfig::default()
                .epochs(2)
                .batch_size(32)
                .shards(shards),
            &Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        t.fit(&train, FitOptions::new()).unwrap();
        bits(&t)
    };
    assert_eq!(run(None), run(Some(1)));
    // And the shards do change the arithmetic: the test above could fail.
    assert_ne!(run(None), run(Some(2)));
}

#[test]
fn a_sharded_run_resumes_bit_identically_on_a_different_number_of_members() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let config = TrainConfig::default()
        .epochs(2)
        .batch_size(36)
        .shards(Some(4));
    let whole = train_in_group(2, count_vae, cells, config.clone());
    // One epoch on two members; member 0 writes the checkpoint.
    let p = path.clone();
    let c = config.clone().epochs(1);
    in_group(2, move |m| {
        let (train, _) = cells();
        let mut t = member_trainer(count_vae(train.dim()), c.clone(), m);
        t.fit(&train, FitOptions::new()).unwrap();
        if t.rank() == 0 {
            t.save_checkpoint(&p, &[]).unwrap();
        }
    });
    // The second epoch on four members.
    let resumed = in_group(4, move |m| {
        let (train, test) = cells();
        let mut t =
            Trainer::<f32>::resume(&path, &Parallelism::threads(1).unwrap(), Some(2)).unwrap();
        t.set_group(Box::new(m)).unwrap();
        let reports = t.fit(&train, FitOptions::new().test(&test)).unwrap();
        (bits(&t), reports[0].test.unwrap().neg_elbo.to_bits())
    });
    for r in &resumed {
        assert!(r == &whole[0], "the resumed run differs");
    }
}

#[test]
fn members_that_disagree_are_refused_before_training() {
    // Different seeds: different settings and initial parameters.
    let outcomes = in_group(2, |m| {
        let (train, _) = images();
        let seed = elbo::Collective::rank(&m) as u64;
        let config = TrainConfig::default()
            .epochs(1)
            .batch_size(32)
            .shards(Some(2))
            .seed(seed);
        let mut t = member_trainer(image_vae(train.dim()), config, m);
        let before = bits(&t);
        let r = t.fit(&train, FitOptions::new());
        (r.map(|_| ()), before == bits(&t))
    });
    for (r, untouched) in outcomes {
        match r {
            Err(Error::Distributed(m)) => assert!(m.contains("settings"), "{m}"),
            other => panic!("expected a disagreement, got {other:?}"),
        }
        assert!(untouched, "a refused member trained");
    }
    // Same settings, different data.
    let outcomes = in_group(2, |m| {
        let data = elbo::data::shapes::generate(5, elbo::Collective::rank(&m) as u64, 64).unwrap();
        let config = TrainConfig::default()
            .epochs(1)
            .batch_size(32)
            .shards(Some(2));
        let mut t = member_trainer(image_vae(data.dim()), config, m);
        t.fit(&data, FitOptions::new()).map(|_| ())
    });
    for r in outcomes {
        match r {
            Err(Error::Distributed(m)) => {
                assert!(
                    m.contains("training data") && !m.contains("settings"),
                    "{m}"
                )
            }
            other => panic!("expected a disagreement, got {other:?}"),
        }
    }
}

#[test]
fn shard_counts_the_group_cannot_share_evenly_are_refused() {
    let (train, _) = images();
    let t = |shards| {
        Trainer::<f32>::new(
            image_vae(train.dim()),
            TrainConfig::default().batch_size(32).shards(shards),
            &Parallelism::threads(1).unwrap(),
        )
        .unwrap()
    };
    let mut group = InProcess::group(3).unwrap();
    let mut a = t(Some(4));
    assert!(a.set_group(Box::new(group.pop().unwrap())).is_err());
    let mut b = t(None);
    assert!(matches!(
        b.set_group(Box::new(group.pop().unwrap())),
        Err(Error::Distributed(_))
    ));
    assert!(
        Trainer::<f32>::new(
            image_vae(train.dim()),
            TrainConfig::default().batch_size(32).shards(Some(33)),
            &Parallelism::threads(1).unwrap(),
        )
        .is_err()
    );
}

#[test]
fn a_member_that_diverges_stops_every_member() {
    // A learning rate that makes the loss explode: every member must stop at the same step
    // with the same error, none left waiting in an exchange.
    let outcomes = in_group(2, |m| {
        let (train, _) = images();
        let config = TrainConfig::default()
            .epochs(3)
            .batch_size(32)
            .shards(Some(2))
            .optimizer(elbo::OptimizerConfig::sgd(1e30, 0.0));
        let mut t = member_trainer(image_vae(train.dim()), config, m);
        t.fit(&train, FitOptions::new()).map(|_| ())
    });
    let steps: Vec<u64> = outcomes
        .into_iter()
        .map(|r| match r {
            Err(Error::Diverged { step, .. }) => step,
            other => panic!("expected divergence, got {other:?}"),
        })
        .collect();
    assert_eq!(steps[0], steps[1]);
}

/// A sharded step's gradient is the sum of its shards' gradients, each computed alone on its
/// own noise and weighted by its share of the rows: checked in f64 against the public
/// forward and backward passes run shard by shard (3, 3 and 4 rows of a batch of 10).
#[test]
fn a_sharded_gradient_is_the_row_weighted_sum_of_the_shards_gradients() {
    use elbo::rng::{Purpose, fill_normal, stream};
    use elbo::{Elbo, Workspace};
    let (train, _) = images();
    let vae = image_vae(train.dim());
    let config = TrainConfig::default()
        .batch_size(10)
        .shards(Some(3))
        .seed(4);
    let mut t =
        Trainer::<f64>::new(vae.clone(), config, &Parallelism::threads(2).unwrap()).unwrap();
    let params = t.params().to_vec();
    let idx: Vec<usize> = (0..10).map(|i| i * 7 % train.len()).collect();
    t.step(&train, &idx).unwrap();
    let (d, zd, n) = (train.dim(), vae.latent_dim(), vae.num_params());
    let mut expected = vec![0f64; n];
    let mut g = vec![0f64; n];
    let mut ws = Workspace::<f64>::new(&vae, 10, 1, 1).unwrap();
    for (s, rows) in [0..3, 3..6, 6..10].into_iter().enumerate() {
        let m = rows.len();
        train.gather(&idx[rows], &mut ws.x[..m * d]).unwrap();
        fill_normal(
            &mut stream(4, Purpose::Noise, s as u64 + 1),
            &mut ws.eps[..m * zd],
        );
        let elbo = Elbo::new(&vae);
        elbo.forward(&params, &mut ws, m).unwrap();
        elbo.backward(&params, &mut ws, m, 1.0, &mut g).unwrap();
        for (e, v) in expected.iter_mut().zip(&g) {
            *e += v * m as f64 / 10.0;
        }
    }
    let scale = expected.iter().fold(0f64, |a, v| a.max(v.abs()));
    let worst = t
        .grads()
        .iter()
        .zip(&expected)
        .fold(0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        worst <= 1e-12 * scale,
        "worst difference {worst} of {scale}"
    );
}

fn batch_norm_vae(dim: usize) -> Vae {
    counts_model(dim, "nb", true)
}

/// Batch normalisation under shards: each shard normalises by its own statistics, and the
/// running averages move towards the row-weighted mean of the shards' statistics, which travel
/// through the same fixed tree as the gradient. The same bits on 1, 2 and 4 members; running
/// averages that moved; and an evaluation (which uses them) close to the unsharded run's.
#[test]
fn batch_normalisation_trains_sharded_with_the_same_bits_on_any_number_of_members() {
    let config = TrainConfig::default()
        .epochs(3)
        .batch_size(36)
        .shards(Some(4))
        .seed(2);
    let one = train_in_group(1, batch_norm_vae, cells, config.clone());
    for members in [2, 4] {
        let many = train_in_group(members, batch_norm_vae, cells, config.clone());
        assert!(
            many.iter().all(|m| m == &one[0]),
            "{members} members differ"
        );
    }
    let (train, test) = cells();
    let run = |shards| {
        let mut t = Trainer::<f32>::new(
            batch_norm_vae(train.dim()),
            config.clone().shards(shards),
            &Parallelism::threads(2).unwrap(),
        )
        .unwrap();
        let r = t.fit(&train, FitOptions::new().test(&test)).unwrap();
        (t, r[2].test.unwrap().neg_elbo)
    };
    let (sharded, e_sharded) = run(Some(4));
    let (_, e_plain) = run(None);
    let layout = sharded.vae().layout();
    let running: Vec<f32> = layout
        .tensors()
        .iter()
        .filter(|t| t.name.ends_with("running_mean"))
        .flat_map(|t| sharded.params()[t.range()].to_vec())
        .collect();
    assert!(!running.is_empty() && running.iter().any(|v| v.abs() > 1e-3));
    assert!(
        (e_sharded - e_plain).abs() < 0.05 * e_plain.abs(),
        "test -ELBO sharded {e_sharded} against unsharded {e_plain}"
    );
}

/// With more than one member and an elementwise update, each member moves only its slice of
/// the parameters and of the optimizer's state, and the members share them: the parameters
/// after every step, the state when the epoch ends. So after an epoch the whole state (Adam's
/// moments, weight decay included) is the one process's, bit for bit, on every member; and
/// in the middle of an epoch a checkpoint, which would hold a stale state, is refused.
#[test]
fn members_share_the_optimizer_state_by_the_end_of_each_epoch() {
    let config = TrainConfig::default()
        .epochs(1)
        .batch_size(36)
        .shards(Some(4))
        .weight_decay(1e-3)
        .seed(5);
    let state = |members: usize| {
        let c = config.clone();
        in_group(members, move |m| {
            let (train, _) = cells();
            let mut t = member_trainer(count_vae(train.dim()), c.clone(), m);
            t.fit(&train, FitOptions::new()).unwrap();
            let s: Vec<u32> = t.optimizer().state().iter().map(|v| v.to_bits()).collect();
            (bits(&t), s)
        })
    };
    let one = state(1);
    for (rank, got) in state(2).iter().enumerate() {
        assert!(got.0 == one[0].0, "member {rank} of 2: parameters differ");
        assert!(
            got.1 == one[0].1,
            "member {rank} of 2: optimizer state differs"
        );
    }
    let c = config.clone();
    let refused = in_group(2, move |m| {
        let (train, _) = cells();
        let mut t = member_trainer(count_vae(train.dim()), c.clone(), m);
        t.step(&train, &(0..36).collect::<Vec<_>>()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        t.save_checkpoint(dir.path().join("mid.safetensors"), &[])
    });
    for r in refused {
        assert!(matches!(r, Err(elbo::Error::Distributed(_))), "{r:?}");
    }
}
