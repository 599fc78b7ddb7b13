//! User files and pictures: .npy and CSV round trips and their errors, training on user data,
//! the model commands, and pictures checked by size and pixel statistics.

use std::path::Path;
use std::process::Command;

use elbo::Error;
use elbo::files::{read_matrix, write_matrix};

fn elbo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (width, height, channels, pixels) of a PNG.
fn read_png(p: &Path) -> (usize, usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (
        info.width as usize,
        info.height as usize,
        info.color_type.samples(),
        buf,
    )
}

#[test]
fn matrices_round_trip_through_npy_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    for name in ["m.npy", "m.csv"] {
        let p = dir.path().join(name);
        write_matrix(
            &p,
            3,
            4,
            &values,
            &["a".into(), "b".into(), "c".into(), "d".into()],
        )
        .unwrap();
        let ds = read_matrix(&p).unwrap();
        assert_eq!((ds.len(), ds.dim()), (3, 4));
        assert_eq!(
            ds.to_array::<f32>().into_raw_vec_and_offset().0,
            values,
            "{name}"
        );
    }
    // f64 .npy is read too.
    let p = dir.path().join("f64.npy");
    let a = ndarray::Array2::<f64>::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f64 / 7.0);
    ndarray_npy::write_npy(&p, &a).unwrap();
    assert_eq!(
        read_matrix(&p).unwrap().to_array::<f64>(),
        a.mapv(|v| v as f32 as f64)
    );
}

#[test]
fn broken_user_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (write("ragged.csv", b"1,2,3\n4,5\n"), "line 2 has 2 values"),
        (write("word.csv", b"x,y\n1,2\n3,oops\n"), "line 3"),
        (write("empty.csv", b"a,b\n"), "no rows"),
        (write("bad.npy", b"\x93NUMPY garbage"), "not a 2-D"),
        (write("data.txt", b"1,2"), "expected a .npy or .csv"),
    ];
    for (p, needle) in cases {
        match read_matrix(&p) {
            Err(Error::Malformed { reason, .. }) => {
                assert!(reason.contains(needle), "{}: {reason}", p.display())
            }
            other => panic!("{}: {other:?}", p.display()),
        }
    }
    let nan = write("nan.csv", b"1,2\nNaN,3\n");
    assert!(
        matches!(read_matrix(&nan), Err(Error::InvalidData(m)) if m.contains("row 1, column 0"))
    );
}

#[test]
fn trains_on_user_csv_with_a_gaussian_and_refuses_it_for_a_bernoulli() {
    let dir = tempfile::tempdir().unwrap();
    // 400 points near a line in 5 dimensions, values outside [0, 1].
    let mut s = String::from("x0,x1,x2,x3,x4\n");
    for i in 0..400 {
        let t = i as f32 / 40.0 - 5.0;
        s += &format!(
            "{},{},{},{},{}\n",
            t,
            2.0 * t,
            -t,
            0.5 * t + 1.0,
            (i % 7) as f32 * 0.01
        );
    }
    let data = dir.path().join("points.csv");
    std::fs::write(&data, s).unwrap();
    let out = dir.path().join("run");
    let o = ok(elbo(&[
        "train",
        "--data",
        "file",
        "--data-path",
        data.to_str().unwrap(),
        "--likelihood",
        "gaussian",
        "--hidden",
        "16",
        "--latent",
        "1",
        "--batch-size",
        "40",
        "--epochs",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(
        o.lines().filter(|l| l.starts_with("epoch")).count(),
        5,
        "{o}"
    );
    let o = elbo(&[
        "train",
        "--data",
        "file",
        "--data-path",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("[0, 1]") && err.contains("bernoulli"), "{err}");
}

#[test]
fn model_commands_and_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    ok(elbo(&[
        "train",
        "--shapes-size",
        "1000",
        "--epochs",
        "3",
        "--hidden",
        "64",
        "--latent",
        "2",
        "--batch-size",
        "50",
        "--out",
        r,
    ]));
    // Pictures written by train: sizes follow from the grid layout, pixels are neither blank
    // nor saturated.
    let (w, h, c, px) = read_png(&run.join("samples.png"));
    assert_eq!((w, h, c), (8 * 58 + 2, 8 * 58 + 2, 1));
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
    assert!((5.0..200.0).contains(&mean), "mean grey {mean}");
    let (w, h, _, _) = read_png(&run.join("traversal.png"));
    assert_eq!(
        (w, h),
        (9 * 58 + 2, 2 * 58 + 2),
        "one row per latent dimension"
    );
    let (w, h, c, px) = read_png(&run.join("latents.png"));
    assert_eq!((w, h, c), (400, 400, 3));
    let coloured = px
        .chunks(3)
        .filter(|p| !(p[0] == p[1] && p[1] == p[2]))
        .count();
    assert!(coloured > 100, "{coloured} coloured pixels");
    assert!(run.join("manifold.png").is_file() && run.join("interpolation.png").is_file());
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("test -ELBO") && svg.contains("polyline"));
    // encode: means and variances of the 100 test examples.
    let model = run.join("model.safetensors");
    let m = model.to_str().unwrap();
    let csv = dir.path().join("latents.csv");
    ok(elbo(&["encode", m, "--output", csv.to_str().unwrap()]));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("mu_0,mu_1,var_0,var_1\n"));
    let lat = read_matrix(&csv).unwrap();
    assert_eq!((lat.len(), lat.dim()), (100, 4));
    assert!((0..100).all(|i| lat.value(i, 2).unwrap() > 0.0 && lat.value(i, 3).unwrap() > 0.0));
    // sample: the .npy means are the decoder's output for the .npy z.
    let (means, z) = (dir.path().join("means.npy"), dir.path().join("z.npy"));
    ok(elbo(&[
        "sample",
        m,
        "--n",
        "10",
        "--npy",
        means.to_str().unwrap(),
        "--z-npy",
        z.to_str().unwrap(),
        "--out",
        dir.path().join("s.png").to_str().unwrap(),
    ]));
    let loaded = elbo::train::checkpoint::load::<f32>(&model).unwrap();
    let zs = read_matrix(&z)
        .unwrap()
        .to_array::<f32>()
        .into_raw_vec_and_offset()
        .0;
    let ours = loaded.vae.decode_mean(&loaded.params, &zs, 1).unwrap();
    assert_eq!(
        read_matrix(&means)
            .unwrap()
            .to_array::<f32>()
            .into_raw_vec_and_offset()
            .0,
        ours
    );
    let out = dir.path().join("recon.png");
    ok(elbo(&["reconstruct", m, "--out", out.to_str().unwrap()]));
    assert_eq!(read_png(&out).0, 8 * 58 + 2);
    let pics = dir.path().join("pics");
    let listed = ok(elbo(&["pictures", m, "--out", pics.to_str().unwrap()]));
    assert_eq!(listed.lines().count(), 6, "{listed}");
}

/// The README shows scripts/load_model.py verbatim (CI runs that file against `elbo sample`).
#[test]
fn readme_python_snippet_is_the_tested_script() {
    let root = &Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/load_model.py")).unwrap();
    assert!(
        readme.contains(&script),
        "README.md must contain scripts/load_model.py verbatim"
    );
}
