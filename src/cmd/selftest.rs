//! `fc7 selftest` on the terminal: the engine-vs-CPU table and, with --bench, training speed.

use anyhow::Result;
use clap::Args;

use crate::device::Device;
use crate::train::engine::cpu::Cpu;
use crate::train::engine::cuda::Cuda;
use crate::train::engine::{Engine, Math};
use crate::train::selftest::{self, Check};
use crate::train::throughput;

#[derive(Args)]
pub struct SelftestArgs {
    /// The engine to check against the CPU engine: cuda, cuda:N, cpu (the CPU engine against
    /// itself) or auto (CUDA when it loads, else the CPU).
    #[arg(long, default_value = "cuda")]
    device: Device,
    /// Also measure training images/s of the paper network (batch 128) and the quick preset.
    #[arg(long)]
    bench: bool,
    /// Steps timed per benchmark.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// The arithmetic checked: fp32 (every difference is a bug) or bf16 (the engine's bf16
    /// products against FP32 sums of the same bf16-rounded operands).
    #[arg(long, default_value = "fp32", value_parser = checked_math)]
    precision: Math,
    /// Also check data-parallel training over N GPUs from --device's on (NCCL's sum, two split
    /// steps against one GPU, the same weights on each); --bench then adds their rate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    gpus: Option<u32>,
}

fn checked_math(s: &str) -> std::result::Result<Math, String> {
    match s.parse::<Math>()? {
        Math::Tf32 => Err("the selftest checks fp32 or bf16 (TF32 rounds inside cuDNN)".into()),
        m => Ok(m),
    }
}

fn table(engine: &str, checks: &[Check]) -> usize {
    println!("engine: {engine}\nreference: {}", Cpu.describe());
    println!(
        "{:<44} {:>12} {:>10}  result",
        "check", "rel. error", "tolerance"
    );
    for c in checks {
        let verdict = if c.passed() { "ok" } else { "FAILED" };
        println!(
            "{:<44} {:>12.3e} {:>10.0e}  {verdict}",
            c.name, c.error, c.tolerance
        );
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    println!("{} checks, {failed} failed", checks.len());
    failed
}

fn bench<E: Engine>(e: &E, iters: usize) -> Result<()> {
    for (preset, batch) in [("paper", 128), ("quick", 64)] {
        let cfg = crate::train::recipe::architecture(&crate::train::recipe::preset(preset)?, 1000);
        let rate = throughput::step_rate(e, &cfg, batch, iters)?;
        println!("training {preset} network, batch {batch}: {rate:.1} images/s");
    }
    Ok(())
}

fn check<E: Engine>(e: &E, a: &SelftestArgs) -> Result<i32> {
    let failed = table(&e.describe(), &selftest::compare(e, a.precision));
    Ok(i32::from(failed > 0))
}

fn check_cpu(a: &SelftestArgs) -> Result<i32> {
    if a.precision == Math::Bf16 {
        anyhow::bail!("--precision bf16 checks the CUDA engine; the CPU engine computes in FP32");
    }
    let code = check(&Cpu, a)?;
    if a.bench {
        bench(&Cpu, a.iters)?;
    }
    Ok(code)
}

pub fn selftest(a: SelftestArgs) -> Result<i32> {
    let ordinal = match a.device {
        Device::Cpu => return check_cpu(&a),
        Device::Cuda(n) => n,
        Device::Auto => 0,
    };
    // Full FP32 by default so that a difference is a bug rather than rounding.
    let mut gpu = match crate::train::engine::cuda::Cuda::with_math(ordinal, a.precision) {
        Ok(g) => g,
        Err(e) if a.device == Device::Auto => {
            eprintln!("note: no CUDA engine here ({e}); checking the CPU engine against itself");
            return check_cpu(&a);
        }
        Err(e) => return Err(e.into()),
    };
    let mut code = check(&gpu, &a)?;
    if let Some(n) = a.gpus {
        code = code.max(check_team(&gpu, ordinal, n as usize, &a)?);
    }
    if a.bench {
        for math in [Math::Tf32, Math::Bf16] {
            println!("with {math} products (tf32: training's default):");
            gpu.set_math(math);
            bench(&gpu, a.iters)?;
        }
    }
    Ok(code)
}

/// The data-parallel checks over `n` GPUs (the first being `lead`), and their rate with --bench.
fn check_team(lead: &Cuda, ordinal: i32, n: usize, a: &SelftestArgs) -> Result<i32> {
    use crate::train::parallel::{check::team_checks, nccl::NcclSum};
    let helpers = (ordinal + 1..ordinal + n as i32)
        .map(|o| Cuda::with_math(o, a.precision))
        .collect::<crate::error::Result<Vec<_>>>()?;
    let mut engines = vec![lead];
    engines.extend(helpers.iter());
    let nccl = NcclSum::new(&engines)?;
    let failed = table(
        &format!("{n} × {}", lead.describe()),
        &team_checks(&engines, &nccl)?,
    );
    if a.bench {
        let batch = 128 * n;
        let cfg = crate::train::recipe::architecture(&crate::train::recipe::preset("paper")?, 1000);
        let rate = throughput::team_rate(&engines, &nccl, &cfg, batch, a.iters)?;
        println!(
            "training paper network on {n} GPUs, batch {batch} (128 each): {rate:.1} images/s"
        );
    }
    lead.make_current()?;
    Ok(i32::from(failed > 0))
}
