//! What AMX's bf16 tile product costs on this machine, alone and with the tile loads a
//! blocked product needs: the measurements behind `kernels::bf16`'s AMX path (BENCHMARKS.md,
//! "bf16 products").
//!
//! cargo run --release --example amx_probe
//!
//! Prints nanoseconds per `tdpbf16ps` (16 x 32 by 32 x 16 bf16, 8,192 multiply-adds) for:
//! the products alone on resident tiles; a 2 x 2 block of C with both operands' tiles loaded
//! every step (4 loads per 4 products, as the library's kernel does); and with only B's loaded
//! (2 per 4). x86-64 Linux only; elsewhere, or without AMX, it says so.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn main() {
    use std::arch::asm;
    use std::time::Instant;

    /// What `ldtilecfg` reads: 64 bytes, the palette at byte 0, each tile's bytes per row (u16)
    /// from byte 16 and its rows from byte 48.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);
    // The library's own check: CPUID, then the kernel's grant of the tile state (once per
    // process, which this probe then shares).
    if !elbo::Bf16Path::Amx.is_available() {
        println!("this CPU has no AMX-BF16, or the kernel did not grant the tile state");
        return;
    }
    // Palette 1; tiles 0-7 each 16 rows of 64 bytes.
    let mut config = TileConfig([0; 64]);
    config.0[0] = 1;
    for t in 0..8 {
        (config.0[16 + 2 * t], config.0[48 + t]) = (64, 16);
    }
    // 512 tiles of 1 KiB of bf16 values in [1, 2), no two pages alike (a buffer of one repeated
    // value is merged by this VM's host into a page or two, which the caches then hold whole):
    // loads cycle through `span` of them.
    let tiles: Vec<u16> = (0..512 * 512usize)
        .map(|i| 0x3f80 | ((i.wrapping_mul(0x9E37_79B9) >> 20) & 0x7f) as u16)
        .collect();
    let steps = 1_000_000usize;
    let report = |label: &str, products: usize, seconds: f64| {
        println!(
            "{label}: {:.2} ns per tdpbf16ps",
            seconds * 1e9 / products as f64
        );
    };
    // SAFETY: AMX is present and granted (checked above); every load reads 16 rows of 64 bytes
    // inside `tiles` (offsets below 512 - 8 tiles); the tiles are released at the end.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        let t = Instant::now();
        for _ in 0..steps {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        report("products alone", 4 * steps, t.elapsed().as_secs_f64());
        for (label, span) in [
            ("4 loads per 4 products, from 4 KiB", 4),
            ("4 loads per 4 products, from 512 KiB", 500),
        ] {
            let t = Instant::now();
            for i in 0..steps {
                let base = tiles.as_ptr().add(((i * 4) % span) * 512);
                asm!(
                    "tileloadd tmm4, [{a} + {s}]",
                    "tileloadd tmm5, [{a} + {s} + 1024]",
                    "tileloadd tmm6, [{a} + {s} + 2048]",
                    "tileloadd tmm7, [{a} + {s} + 3072]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) base, s = in(reg) 64usize, options(nostack, readonly)
                );
            }
            report(label, 4 * steps, t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        for i in 0..steps {
            let base = tiles.as_ptr().add(((i * 2) % 4) * 512);
            asm!(
                "tileloadd tmm6, [{a} + {s}]",
                "tileloadd tmm7, [{a} + {s} + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a = in(reg) base, s = in(reg) 64usize, options(nostack, readonly)
            );
        }
        report(
            "2 loads per 4 products (A's tiles kept)",
            4 * steps,
            t.elapsed().as_secs_f64(),
        );
        asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn main() {
    println!("AMX is probed on x86-64 Linux only");
}
