//! `fc7 selftest` on the terminal: the engine-vs-CPU table and, with --bench, training speed.

use anyhow::Result;
use clap::Args;

use crate::device::Device;
use crate::train::engine::cpu::Cpu;
use crate::train::engine::Engine;
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
    let failed = table(&e.describe(), &selftest::compare(e));
    if a.bench {
        bench(e, a.iters)?;
    }
    Ok(i32::from(failed > 0))
}

pub fn selftest(a: SelftestArgs) -> Result<i32> {
    let ordinal = match a.device {
        Device::Cpu => return check(&Cpu, &a),
        Device::Cuda(n) => n,
        Device::Auto => 0,
    };
    // Full FP32 so that a difference is a bug rather than TF32 rounding.
    let mut gpu = match crate::train::engine::cuda::Cuda::with_tf32(ordinal, false) {
        Ok(g) => g,
        Err(e) if a.device == Device::Auto => {
            eprintln!("note: no CUDA engine here ({e}); checking the CPU engine against itself");
            return check(&Cpu, &a);
        }
        Err(e) => return Err(e.into()),
    };
    let code = check(&gpu, &a)?;
    if a.bench {
        println!("with TF32 convolutions (training's default):");
        gpu.set_tf32(true);
        bench(&gpu, a.iters)?;
    }
    Ok(code)
}
