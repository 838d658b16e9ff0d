//! The CUDA engine's own small kernels, compiled at run time by NVRTC: input normalisation
//! from 8-bit crops, the dropout mask (the same splitmix64 hash as `engine::dropout_hash`),
//! softmax cross-entropy, the bias of fully connected layers and its gradient, and the paper's
//! SGD update. Element-wise kernels use grid-stride loops.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, DriverError, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{Error, Result};

pub const SOURCE: &str = r#"
typedef unsigned long long u64;
typedef unsigned int u32;

#define GRID_STRIDE(i, len) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (len); \
         i += (long long)blockDim.x * gridDim.x)

/* x[n][c][p] = (px[n][c][p] / 255 + shift[n][c] - mean[c]) / std[c] */
extern "C" __global__ void input_u8(const unsigned char* px, const float* shift, float* x,
                                    long long len, int plane, float m0, float m1, float m2,
                                    float s0, float s1, float s2) {
    GRID_STRIDE(i, len) {
        long long nc = i / plane;
        int c = (int)(nc % 3);
        float mean = c == 0 ? m0 : (c == 1 ? m1 : m2);
        float sd = c == 0 ? s0 : (c == 1 ? s1 : s2);
        float v = (float)px[i] / 255.0f;
        x[i] = __fdiv_rn(__fsub_rn(__fadd_rn(v, shift[nc]), mean), sd);
    }
}

__device__ u32 dropout_hash(u64 seed, u64 i) {
    u64 z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (u32)((z ^ (z >> 31)) >> 40);
}

extern "C" __global__ void dropout(float* h, long long len, u64 seed, u32 threshold, float scale) {
    GRID_STRIDE(i, len) {
        h[i] = dropout_hash(seed, (u64)i) >= threshold ? h[i] * scale : 0.0f;
    }
}

/* One thread per sample: loss[i] = logsumexp(row) - row[label]; grad = (softmax - onehot) / n */
extern "C" __global__ void softmax_xent(const float* logits, const u32* labels, float* loss,
                                        float* grad, int n, int k) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float* row = logits + (long long)i * k;
    float mx = row[0];
    for (int j = 1; j < k; j++) mx = fmaxf(mx, row[j]);
    double sum = 0.0;
    for (int j = 0; j < k; j++) sum += exp((double)(row[j] - mx));
    u32 label = labels[i];
    loss[i] = (float)(log(sum) - (double)(row[label] - mx));
    for (int j = 0; j < k; j++) {
        float p = (float)(exp((double)(row[j] - mx)) / sum);
        grad[(long long)i * k + j] = (p - (j == (int)label ? 1.0f : 0.0f)) / (float)n;
    }
}

/* y[r][j] += b[j] */
extern "C" __global__ void add_bias_rows(float* y, const float* b, long long len, int o) {
    GRID_STRIDE(i, len) { y[i] += b[i % o]; }
}

/* db[j] = sum over rows of dy[r][j], in row order */
extern "C" __global__ void sum_rows(const float* dy, float* db, int n, int o) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= o) return;
    double s = 0.0;
    for (int r = 0; r < n; r++) s += dy[(long long)r * o + j];
    db[j] = (float)s;
}

/* v <- m v - wd lr w - lr g; w <- w + v */
extern "C" __global__ void sgd(float* w, float* v, const float* g, long long len, float lr,
                               float m, float wd) {
    GRID_STRIDE(i, len) {
        float nv = m * v[i] - wd * lr * w[i] - lr * g[i];
        v[i] = nv;
        w[i] += nv;
    }
}
"#;

const NAMES: [&str; 6] = [
    "input_u8",
    "dropout",
    "softmax_xent",
    "add_bias_rows",
    "sum_rows",
    "sgd",
];

/// Machine code (a cubin) of `SOURCE` for compute capability `major.minor`. Preferred to PTX:
/// a driver older than NVRTC cannot JIT NVRTC's newer PTX, but runs cubins of the same major
/// CUDA version.
pub fn compile_cubin((major, minor): (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let fail = |what: &str, e: result::NvrtcError| Error::Cuda(format!("NVRTC {what}: {e:?}"));
    let src = std::ffi::CString::new(SOURCE).expect("no NUL in the source");
    let prog = result::create_program(&src, None).map_err(|e| fail("create", e))?;
    let arch = format!("--gpu-architecture=sm_{major}{minor}");
    // SAFETY: `prog` is a live program until destroyed at the end; buffers are sized by NVRTC.
    let out = unsafe {
        let built = result::compile_program(prog, &[arch.as_str()]).map_err(|e| {
            let log = result::get_program_log(prog).unwrap_or_default();
            let log: String = log.iter().map(|&c| c as u8 as char).collect();
            Error::Cuda(format!(
                "NVRTC compile for sm_{major}{minor} ({e:?}): {log}"
            ))
        });
        let cubin = built.and_then(|_| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("cubin size", e))?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char)
                .result()
                .map_err(|e| fail("cubin", e))?;
            Ok(buf)
        });
        let _ = result::destroy_program(prog);
        cubin
    };
    out
}

/// NVRTC's PTX for `SOURCE`, for the default virtual architecture of the installed NVRTC.
pub fn compile() -> Result<Ptx> {
    let opts = CompileOptions {
        name: Some("fc7_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, opts).map_err(|e| Error::Cuda(format!("NVRTC: {e}")))
}

pub struct Kernels {
    pub input_u8: CudaFunction,
    pub dropout: CudaFunction,
    pub softmax_xent: CudaFunction,
    pub add_bias_rows: CudaFunction,
    pub sum_rows: CudaFunction,
    pub sgd: CudaFunction,
}

pub fn driver(what: &str) -> impl Fn(DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels> {
        let module = ctx
            .load_module(compile()?)
            .map_err(driver("loading kernels"))?;
        let f = |name: &str| module.load_function(name).map_err(driver(name));
        let [a, b, c, d, e, g] = NAMES;
        Ok(Kernels {
            input_u8: f(a)?,
            dropout: f(b)?,
            softmax_xent: f(c)?,
            add_bias_rows: f(d)?,
            sum_rows: f(e)?,
            sgd: f(g)?,
        })
    }
}

/// Grid-stride launch shape for `len` elements.
pub fn elementwise(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(256).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The result of `LaunchArgs::launch` as ours.
pub fn launched<T>(r: std::result::Result<T, DriverError>, name: &str) -> Result<()> {
    r.map(|_| ()).map_err(driver(name))
}

/// One thread per item, for the kernels that loop inside a thread.
pub fn per_item(count: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (count.div_ceil(128).max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles the kernels with NVRTC where it is installed (scripts/test.sh installs it from
    /// the `nvidia-cuda-nvrtc` wheel and sets FC7_REQUIRE_NVRTC=1); no GPU is needed.
    #[test]
    fn kernels_compile_with_nvrtc() {
        // SAFETY: only probes whether the shared library can be opened.
        let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        if !present {
            assert!(
                std::env::var_os("FC7_REQUIRE_NVRTC").is_none(),
                "FC7_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
            );
            eprintln!("NVRTC not installed: kernel compilation not checked");
            return;
        }
        let ptx = compile().expect("kernels compile").to_src();
        for name in NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{name} missing from PTX"
            );
        }
        // Machine code for the H100/H200 (sm_90): an ELF image naming every kernel.
        let cubin = compile_cubin((9, 0)).expect("sm_90 cubin");
        assert_eq!(&cubin[..4], b"\x7fELF");
        for name in NAMES {
            let found = cubin.windows(name.len()).any(|w| w == name.as_bytes());
            assert!(found, "{name} missing from the cubin");
        }
    }
}
