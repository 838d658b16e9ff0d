//! Test-only: the NVRTC kernels' source compiled for the host by the C++ compiler, with the
//! CUDA built-ins (blockIdx, threadIdx, `__fadd_rn`, …) defined as plain C++, and each kernel
//! run over its whole launch grid one thread at a time. Checks the kernels' indexing and
//! arithmetic against the CPU engine on a machine without a GPU (exact where the arithmetic
//! is the same, which includes the dropout hash).

use std::process::Command;

use super::kernels::SOURCE;
use crate::model::Standardise;
use crate::train::augment::Crop;
use crate::train::engine::cpu::{ops, Cpu};
use crate::train::engine::random;
use crate::train::engine::{Colour, Engine, Normalise, Shape};

/// Panics with the first differing element and the count, not two whole vectors.
fn same(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if let Some(&i) = diff.first() {
        panic!(
            "{name}: {} of {} differ, first at {i}: {} vs {}",
            diff.len(),
            got.len(),
            got[i],
            want[i]
        );
    }
}

const PRELUDE: &str = r#"
#include <cmath>
struct fc7_dim3 { unsigned x, y, z; };
static fc7_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
#include <cstring>
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
extern "C" void fc7_launch(unsigned block, unsigned thread, unsigned bdim, unsigned gdim) {
    blockIdx.x = block; threadIdx.x = thread; blockDim.x = bdim; gridDim.x = gdim;
}
"#;

struct Host {
    lib: libloading::Library,
    _dir: tempfile::TempDir,
}

impl Host {
    fn compile() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("kernels.cpp");
        let so = dir.path().join("kernels.so");
        std::fs::write(&src, format!("{PRELUDE}{SOURCE}")).unwrap();
        let out = Command::new("c++")
            .args(["-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&src)
            .output()
            .expect("a C++ compiler (c++) to emulate the kernels");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: a library just built from our own source.
        let lib = unsafe { libloading::Library::new(&so) }.unwrap();
        Host { lib, _dir: dir }
    }

    /// Runs `call` once per thread of a `blocks`×`threads` grid.
    fn grid(&self, blocks: u32, threads: u32, mut call: impl FnMut()) {
        // SAFETY: the signature matches fc7_launch in PRELUDE.
        let launch: libloading::Symbol<unsafe extern "C" fn(u32, u32, u32, u32)> =
            unsafe { self.lib.get(b"fc7_launch") }.unwrap();
        for b in 0..blocks {
            for t in 0..threads {
                // SAFETY: sets four globals.
                unsafe { launch(b, t, threads, blocks) };
                call();
            }
        }
    }

    fn f<T>(&self, name: &str) -> libloading::Symbol<'_, T> {
        // SAFETY: each caller names the kernel with its C signature.
        unsafe { self.lib.get(name.as_bytes()) }.unwrap()
    }
}

#[test]
fn kernels_on_the_host_match_the_cpu_engine() {
    let h = Host::compile();
    type Input = unsafe extern "C" fn(*const u8, *const f32, *mut f32, i64, i32);
    let s = Shape::new(2, 3, 5, 4);
    let px: Vec<u8> = (0..s.len()).map(|i| (i * 53 % 256) as u8).collect();
    let shifts = [[0.01f32, -0.02, 0.03], [0.04, 0.0, -0.05]];
    let input = h.f::<Input>("input_u8");
    for norm in norms() {
        let table = Colour::flatten(&norm.colours_of_planes(&px, &shifts));
        let mut x = vec![0.0f32; s.len()];
        // A grid-stride kernel run as one thread covers every element.
        h.grid(1, 1, || unsafe {
            input(
                px.as_ptr(),
                table.as_ptr(),
                x.as_mut_ptr(),
                s.len() as i64,
                20,
            )
        });
        same("input_u8", &x, &Cpu.input(&px, &shifts, &norm, s).unwrap());
    }

    type Dropout = unsafe extern "C" fn(*mut f32, i64, u64, u32, f32);
    let v = random(5000, 3);
    let mut d = v.clone();
    let dropout = h.f::<Dropout>("dropout");
    let threshold = crate::train::engine::dropout_threshold(0.5);
    h.grid(3, 7, || unsafe {
        dropout(d.as_mut_ptr(), 5000, 99, threshold, 2.0)
    });
    let mut want = v.clone();
    Cpu.dropout(&mut want, 0.5, 99).unwrap();
    same("dropout", &d, &want);

    type Scale = unsafe extern "C" fn(*mut f32, i64, f32);
    let mut t = v.clone();
    let scale = h.f::<Scale>("scale");
    h.grid(2, 5, || unsafe { scale(t.as_mut_ptr(), 5000, 0.375) });
    let mut want = v.clone();
    Cpu.scale(&mut want, 0.375).unwrap();
    same("scale", &t, &want);
}

/// input_crop against the host's cut (`augment::write_crop`) and `input`: views at the
/// corners, flipped and not, with colour shifts, on images that are not square multiples.
#[test]
fn crops_cut_by_the_kernel_match_the_host_cut() {
    let h = Host::compile();
    type InputCrop =
        unsafe extern "C" fn(*const u8, *const i32, *const f32, *mut f32, i64, i32, i32);
    let (n, side, crop) = (4usize, 7usize, 5usize);
    let images: Vec<u8> = (0..n * side * side * 3)
        .map(|i| (i * 97 % 251) as u8)
        .collect();
    let places = [(0, 0, false), (2, 0, true), (0, 2, true), (1, 2, false)];
    let views: Vec<Crop> = places
        .iter()
        .enumerate()
        .map(|(i, &(x, y, flip))| Crop {
            x,
            y,
            flip,
            shift: [0.01 * i as f32, -0.02, 0.03],
        })
        .collect();
    let at: Vec<i32> = views
        .iter()
        .flat_map(|v| [v.x as i32, v.y as i32, v.flip as i32])
        .collect();
    let len = n * 3 * crop * crop;
    let input = h.f::<InputCrop>("input_crop");
    for norm in norms() {
        let table = Colour::flatten(&norm.colours_of_views(&images, side, &views, crop));
        let mut x = vec![0.0f32; len];
        h.grid(3, 32, || unsafe {
            input(
                images.as_ptr(),
                at.as_ptr(),
                table.as_ptr(),
                x.as_mut_ptr(),
                len as i64,
                side as i32,
                crop as i32,
            )
        });
        let want = Cpu.input_views(&images, side, &views, &norm, crop).unwrap();
        same("input_crop", &x, &want);
    }
}

/// The training set's statistics per channel, and each image's own.
fn norms() -> [Normalise; 2] {
    let ch = Normalise::channels([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]);
    [
        ch,
        Normalise {
            standardise: Standardise::Image,
            ..ch
        },
    ]
}

#[test]
fn loss_bias_and_sgd_kernels_on_the_host_match_the_cpu_engine() {
    let h = Host::compile();
    let (n, k) = (6usize, 7usize);
    let logits: Vec<f32> = random(n * k, 5).iter().map(|v| v * 4.0).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 3 % k as u32).collect();
    let (mut loss, mut grad) = (vec![0.0f32; n], vec![0.0f32; n * k]);
    type Xent = unsafe extern "C" fn(*const f32, *const u32, *mut f32, *mut f32, i32, i32);
    let xent = h.f::<Xent>("softmax_xent");
    h.grid(1, n as u32, || unsafe {
        xent(
            logits.as_ptr(),
            labels.as_ptr(),
            loss.as_mut_ptr(),
            grad.as_mut_ptr(),
            n as i32,
            k as i32,
        )
    });
    let (wl, wg) = ops::softmax_cross_entropy(&logits, &labels, k);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6);
    assert!(close(&loss, &wl) && close(&grad, &wg), "softmax_xent");

    let (x, w, b, dy) = (
        random(n * 5, 6),
        random(k * 5, 7),
        random(k, 8),
        random(n * k, 9),
    );
    let mut y = ops::linear_forward(&x, n, &w, &vec![0.0; k], k);
    type Bias = unsafe extern "C" fn(*mut f32, *const f32, i64, i32);
    let bias = h.f::<Bias>("add_bias_rows");
    h.grid(2, 4, || unsafe {
        bias(y.as_mut_ptr(), b.as_ptr(), (n * k) as i64, k as i32)
    });
    assert!(
        close(&y, &ops::linear_forward(&x, n, &w, &b, k)),
        "add_bias_rows"
    );
    let mut db = vec![0.0f32; k];
    type Sum = unsafe extern "C" fn(*const f32, *mut f32, i32, i32);
    let sum = h.f::<Sum>("sum_rows");
    h.grid(1, k as u32, || unsafe {
        sum(dy.as_ptr(), db.as_mut_ptr(), n as i32, k as i32)
    });
    let (mut dw, mut want_db) = (vec![0.0; k * 5], vec![0.0; k]);
    ops::linear_backward(&x, n, &w, k, &dy, &mut dw, &mut want_db);
    same("sum_rows", &db, &want_db);

    let (mut w1, mut v1, g) = (random(300, 10), random(300, 11), random(300, 12));
    let (mut w2, mut v2) = (w1.clone(), v1.clone());
    type Sgd = unsafe extern "C" fn(*mut f32, *mut f32, *const f32, i64, f32, f32, f32);
    let sgd = h.f::<Sgd>("sgd");
    h.grid(1, 1, || unsafe {
        sgd(
            w1.as_mut_ptr(),
            v1.as_mut_ptr(),
            g.as_ptr(),
            300,
            0.01,
            0.9,
            5e-4,
        )
    });
    ops::sgd_step(&mut w2, &mut v2, &g, 0.01, 0.9, 5e-4);
    same("sgd weights", &w1, &w2);
    same("sgd velocity", &v1, &v2);
}

/// The bf16 casts against the `half` crate's conversion (round to nearest, ties to even):
/// ties both ways, the largest finite values (which round to infinity), subnormals, ±0,
/// infinities and NaN, then back to f32 exactly.
#[test]
fn bf16_casts_round_to_nearest_even_like_the_half_crate() {
    let h = Host::compile();
    let mut x: Vec<f32> = [
        0x3F80_8000u32, // 1 + 2⁻⁸: a tie, stays at 1 (even)
        0x3F81_8000,    // a tie rounding up to the even 0x3F82
        0x3F80_8001,    // just above a tie: up
        0x7F7F_FFFF,    // f32::MAX: rounds to infinity
        0x0000_0001,    // the smallest subnormal
        0x8000_0000,    // −0
        0x7F80_0000,    // +∞
        0xFF80_0000,    // −∞
        0x7FC0_0000,    // NaN
        0x7F80_0001,    // a signalling NaN's pattern: must not become ∞
    ]
    .map(f32::from_bits)
    .to_vec();
    x.extend(random(2000, 13).iter().map(|v| v * 1e3));
    let len = x.len();
    let mut y = vec![0u16; len];
    type To = unsafe extern "C" fn(*const f32, *mut u16, i64);
    let to = h.f::<To>("to_bf16");
    h.grid(2, 16, || unsafe {
        to(x.as_ptr(), y.as_mut_ptr(), len as i64)
    });
    for (i, (&v, &b)) in x.iter().zip(&y).enumerate() {
        let want = half::bf16::from_f32(v);
        if v.is_nan() {
            assert!(half::bf16::from_bits(b).is_nan(), "element {i}: {b:#x}");
        } else {
            assert_eq!(b, want.to_bits(), "element {i}: {v:e} ({:#x})", v.to_bits());
        }
    }
    assert_eq!(&y[..4], &[0x3F80, 0x3F82, 0x3F81, 0x7F80]);
    let mut back = vec![0f32; len];
    type From = unsafe extern "C" fn(*const u16, *mut f32, i64);
    let from = h.f::<From>("from_bf16");
    h.grid(1, 8, || unsafe {
        from(y.as_ptr(), back.as_mut_ptr(), len as i64)
    });
    for (i, (&b, &f)) in y.iter().zip(&back).enumerate() {
        assert_eq!(f.to_bits(), (b as u32) << 16, "element {i}");
    }
}
