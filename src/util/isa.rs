//! Which x86 vector extensions fc7's own kernels may use: what the CPU reports, capped by the
//! build. The `avx512` feature (on by default) lets both fc7's kernels and `gemm`'s take the
//! AVX-512 paths; a build with `--no-default-features` runs the code an AVX2-only CPU runs on
//! any machine, which is how the benchmarks stand in for a CPU they cannot get
//! (`scripts/bench/cpu-train.sh` with `ISA=avx2`).

/// AVX-512 F, when the build allows it and the CPU has it.
#[cfg(target_arch = "x86_64")]
pub fn avx512f() -> bool {
    cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f")
}

/// AVX-512 F and DQ (64-bit integer multiplies), when the build allows it and the CPU has them.
#[cfg(target_arch = "x86_64")]
pub fn avx512dq() -> bool {
    avx512f() && std::arch::is_x86_feature_detected!("avx512dq")
}

/// AVX2, when the CPU has it (every build may use it); false off x86-64.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether ONNX Runtime's int8 kernels run any weights at full rate here: on x86 with VNNI
/// (AVX-512 or AVX), whose int8 dot products do not saturate; elsewhere there is no saturating
/// form to avoid (`model::onnx::qdq::WEIGHT_MAX`).
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512vnni")
        || std::arch::is_x86_feature_detected!("avxvnni");
    #[cfg(not(target_arch = "x86_64"))]
    true
}

/// Which compiled copy of a loop runs: the build's baseline (any x86-64), AVX2 or AVX-512.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Base,
    Avx2,
    Avx512,
}

/// The widest copy this build may run on this CPU.
pub fn fastest() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512f() {
            return Path::Avx512;
        }
        if avx2() {
            return Path::Avx2;
        }
    }
    Path::Base
}

/// Every copy this CPU can run, whatever the build allows: what tests compare.
pub fn runnable() -> Vec<Path> {
    let mut paths = vec![Path::Base];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            paths.push(Path::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            paths.push(Path::Avx512);
        }
    }
    paths
}

/// The widest path fc7's kernels take here, for benchmark headers and logs.
pub fn widest() -> &'static str {
    match fastest() {
        Path::Avx512 => "avx512",
        Path::Avx2 => "avx2",
        Path::Base => "scalar",
    }
}
