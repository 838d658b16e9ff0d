//! Benchmarks for BENCHMARKS.md (run through scripts/bench/cpu.sh, not as timed tests):
//!   make-photos DIR N W H      synthetic textured "photos" as JPEGs (parallel)
//!   extract MODEL DEVICE BATCH ITERS [plain]   pure fc7 inference images/s, input prepared
//!                              once (plain: no IO binding, which CUDA otherwise uses;
//!                              FC7BENCH_PLAIN_GRAPH=1: the exported graph's LRN and 3×3
//!                              convolutions, not fc7's operators)
//!   lrn ITERS                  fc7's LRN operators' loops on one thread: NCHW, NHWC, uint8 NHWC
//!   fc-update IN OUT BATCH ITERS   a fully connected layer's backward and SGD update, the
//!                              gradient stored then read (apart) against fused, alternating
//!   fc-products IN OUT BATCH ITERS   the layer's three products alone (forward, dx, dW):
//!                              ms and GFLOP/s (scripts/bench/torch_fc.py: PyTorch's)
//!   sparse-products IN OUT BATCH ITERS PERCENT   the layer's gradients with PERCENT% of dy
//!                              nonzero: dense against skipping its zeros, with digests
//!   agree MODEL DIR N          fc7 on CPU vs CUDA for N images: max/mean absolute difference
//!   agree-models A B DIR N K   model B against model A (e.g. int8 against fp32) on N images
//!                              spread over DIR: relative fc7 error, recall@K of exact neighbours
//!   decode FILE ITERS          fast preprocess vs plain image decode + resize (time, pixel diff)
//!   recall INDEX N K           HNSW vs exact top-K over N indexed images, and query times
//!   recall-vectors INDEX N K CANDIDATES...   graph + re-rank vs exact top-K for N stored
//!                              vectors (any index, synthetic ones too), per candidate count
//!   synth-index SRC OUT N      an index of N vectors drawn around SRC's real fc7 vectors
//!                              (each a random real one plus Gaussian noise of a quarter of
//!                              each dimension's spread, ReLU'd), then its graph; rows 0-9
//!                              name real files in OUT.files so `fc7 query` can open them
//!   rebuild-graph INDEX        builds INDEX's graph again, timed
//!   pg-load, pg-recall LOCAL URL N K [CANDIDATES...]   the PostgreSQL store against a folder
//!                              (fc7bench/pg.rs)
//!   train-step PRESET BATCH ITERS [cpu|cuda] [CLASSES]   training images/s (forward + backward + SGD; 1000 classes unless given)
//!   train-profile PRESET BATCH ITERS CLASSES   the CPU engine's step split by operation and layer (ms per step, share)
//!   feed DATA SIDE CROP BATCH BATCHES CACHE    the training feed alone: crops/s from the pack
//!                                              (built first if missing, its time printed)

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "fc7bench/fc.rs"]
mod fc;
#[path = "fc7bench/pg.rs"]
mod pg;

use fc7::device::Device;
use fc7::imaging::{self, View};
use fc7::infer::embed::{EmbedOptions, Embedder};
use rayon::prelude::*;

fn photo(seed: u32, w: u32, h: u32) -> image::RgbImage {
    let c = [
        (seed * 97 % 256) as f32,
        (seed * 53 % 256) as f32,
        (seed * 31 % 256) as f32,
    ];
    let (fx, fy) = (1.0 + (seed % 7) as f32, 1.0 + (seed % 5) as f32);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let wave = ((u * fx * 6.3).sin() * (v * fy * 6.3).cos() + 1.0) * 0.5;
        let grain = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ seed) % 41) as f32 - 20.0;
        image::Rgb(
            c.map(|k| (k * wave + (255.0 - k) * (1.0 - wave) * u + grain).clamp(0.0, 255.0) as u8),
        )
    })
}

fn make_photos(dir: &Path, n: u32, w: u32, h: u32) {
    std::fs::create_dir_all(dir).unwrap();
    (0..n).into_par_iter().for_each(|i| {
        let img = photo(i, w, h);
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("photo{i:05}.jpg"))).unwrap(),
        );
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88);
        img.write_with_encoder(enc).unwrap();
    });
}

fn feed(data: &Path, side: usize, crop: usize, batch: usize, batches: usize, cache: &Path) {
    let t = Instant::now();
    let source = fc7::train::dataset::Source {
        root: data,
        cache,
        progress: &|_, _| {},
    };
    let d = fc7::train::dataset::load(&source, side, 0.1, 0).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "pack {} ({}): {} training images, {:.2} GB, {:.1} s",
        d.pack.dir.display(),
        if d.pack.built { "built" } else { "reused" },
        d.train.len(),
        d.pack.disk_bytes() as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let threads = rayon::current_num_threads();
    for (on_engine, how) in [(false, "cut on the host"), (true, "whole, for GPU crops")] {
        let rate =
            fc7::train::throughput::feed_rate(&d.train, crop, batch, batches, on_engine).unwrap();
        println!(
            "feed ({how}): {rate:.0} crops/s of {crop}x{crop} from {side}x{side} ({threads} threads, {:.0} per thread), batch {batch}",
            rate / threads as f64
        );
    }
}

fn open(model: &Path, device: &str) -> Embedder {
    open_with(model, device, None)
}

fn open_with(model: &Path, device: &str, io_binding: Option<bool>) -> Embedder {
    // FC7BENCH_PLAIN_GRAPH=1: the exported graph as it is, for comparing with fc7's operators
    let opts = EmbedOptions {
        device: device.parse().unwrap(),
        io_binding,
        own_operators: std::env::var_os("FC7BENCH_PLAIN_GRAPH").is_none(),
        ..Default::default()
    };
    let e = Embedder::open(model, &opts).unwrap_or_else(|e| panic!("{e}"));
    if opts.device != Device::Cpu && e.provider != "CUDA" && device != "auto" {
        panic!("CUDA requested but running on {}", e.provider);
    }
    e
}

fn extract(model: &Path, device: &str, batch: usize, iters: usize, plain: bool) {
    let mut e = open_with(model, device, plain.then_some(false));
    let s = e.input_size();
    let input: Vec<f32> = (0..batch * 3 * s * s)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    for _ in 0..2 {
        e.run(&input, batch, false).unwrap();
    }
    let t = Instant::now();
    for _ in 0..iters {
        e.run(&input, batch, false).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "extract provider={} batch={batch} iters={iters} images/s={:.1} ms/batch={:.2}",
        e.provider,
        (batch * iters) as f64 / secs,
        secs * 1000.0 / iters as f64
    );
}

fn files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.truncate(n);
    v
}

fn agree(model: &Path, dir: &Path, n: usize) {
    let paths = files(dir, n);
    let mut out = Vec::new();
    for dev in ["cpu", "cuda"] {
        let mut e = open(model, dev);
        let pre = e.manifest.preprocess.clone();
        let side = pre.crop as usize;
        let mut input = vec![0.0; paths.len() * 3 * side * side];
        for (p, chunk) in paths.iter().zip(input.chunks_mut(3 * side * side)) {
            let img =
                imaging::prepare_file(p, View::from(&pre), imaging::DEFAULT_MAX_PIXELS).unwrap();
            imaging::to_chw(&img.rgb, &pre, chunk);
        }
        out.push(e.run(&input, paths.len(), false).unwrap().fc7);
    }
    let diffs: Vec<f32> = out[0]
        .iter()
        .zip(&out[1])
        .map(|(a, b)| (a - b).abs())
        .collect();
    let max = diffs.iter().cloned().fold(0.0, f32::max);
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    let scale = out[0].iter().cloned().fold(0.0, f32::max);
    println!(
        "agree images={} max_abs_diff={max:.3e} mean_abs_diff={mean:.3e} max_value={scale:.3}",
        paths.len()
    );
}

/// fc7 of every path under `model` (CPU), batches of 32.
fn embed_all(model: &Path, paths: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut e = open(model, "cpu");
    let pre = e.manifest.preprocess.clone();
    let per = 3 * (pre.crop as usize).pow(2);
    let dim = e.dim();
    let mut out = Vec::new();
    for chunk in paths.chunks(32) {
        let inputs: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| {
                imaging::input_from_file(p, &pre, imaging::DEFAULT_MAX_PIXELS)
                    .unwrap()
                    .tensor
            })
            .collect();
        let flat = inputs.concat();
        debug_assert_eq!(flat.len(), chunk.len() * per);
        let v = e.run(&flat, chunk.len(), false).unwrap().fc7;
        out.extend(v.chunks(dim).map(<[f32]>::to_vec));
    }
    out
}

/// The `k` nearest other rows to each row, exactly.
fn exact_neighbours(v: &[Vec<f32>], k: usize) -> Vec<Vec<usize>> {
    let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    (0..v.len())
        .into_par_iter()
        .map(|i| {
            let mut all: Vec<(f32, usize)> = (0..v.len())
                .filter(|&j| j != i)
                .map(|j| (d(&v[i], &v[j]), j))
                .collect();
            all.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
            all.truncate(k);
            all.into_iter().map(|(_, j)| j).collect()
        })
        .collect()
}

/// Model B against reference model A on N images spread over DIR (recursive): relative fc7
/// error and recall@K of B's exact neighbours against A's.
fn agree_models(a: &Path, b: &Path, dir: &Path, n: usize, k: usize) {
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    all.sort();
    let stride = (all.len() / n.max(1)).max(1);
    let paths: Vec<PathBuf> = all.into_iter().step_by(stride).take(n).collect();
    let (va, vb) = (embed_all(a, &paths), embed_all(b, &paths));
    let rel: Vec<f32> = va
        .iter()
        .zip(&vb)
        .map(|(x, y)| {
            let e: f32 = x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum();
            (e / x.iter().map(|p| p * p).sum::<f32>().max(1e-12)).sqrt()
        })
        .collect();
    let (na, nb) = (exact_neighbours(&va, k), exact_neighbours(&vb, k));
    let hits: usize = na
        .iter()
        .zip(&nb)
        .map(|(x, y)| y.iter().filter(|j| x.contains(j)).count())
        .sum();
    println!(
        "agree-models images={} relative_error_mean={:.4} relative_error_max={:.4} recall@{k}={:.4}",
        paths.len(),
        rel.iter().sum::<f32>() / rel.len() as f32,
        rel.iter().cloned().fold(0.0, f32::max),
        hits as f64 / (paths.len() * k) as f64
    );
}

fn decode(file: &Path, iters: usize) {
    let bytes = std::fs::read(file).unwrap();
    let view = View {
        resize: 256,
        crop: 224,
    };
    let time = |f: &dyn Fn() -> image::RgbImage| {
        let img = f();
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        (img, t.elapsed().as_secs_f64() * 1000.0 / iters as f64)
    };
    let (fast, tf) = time(&|| {
        imaging::prepare_bytes(&bytes, file, view, imaging::DEFAULT_MAX_PIXELS)
            .unwrap()
            .rgb
    });
    let (plain, tp) = time(&|| imaging::reference_view(&bytes, view).unwrap());
    let d: Vec<f64> = fast
        .as_raw()
        .iter()
        .zip(plain.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let max = d.iter().cloned().fold(0.0, f64::max);
    println!("decode fast_ms={tf:.1} plain_ms={tp:.1} ratio={:.3} mean_abs_diff={mean:.2} max_abs_diff={max}", tf / tp);
}

fn recall(index: &Path, n: usize, k: usize) {
    let store = fc7::search::store::Store::open_read(index).unwrap();
    let total = store.catalog.count("images").unwrap();
    let step = (total as usize / n).max(1);
    let mut paths = Vec::new();
    let mut id = 0;
    while paths.len() < n && id <= store.catalog.max_id().unwrap() {
        id += step as i64;
        if let Some(p) = store.catalog.path_of(id).unwrap() {
            paths.push(p);
        }
    }
    let run = |exact: bool| {
        let opts = fc7::search::query::QueryOptions {
            k,
            exclude_self: true,
            embed: EmbedOptions::default(),
            max_pixels: imaging::DEFAULT_MAX_PIXELS,
        };
        let candidates = Some(fc7::search::searcher::CANDIDATES);
        let searcher = fc7::search::searcher::Searcher::open(&store, exact, candidates).unwrap();
        let t = Instant::now();
        let r = fc7::search::query::query(&searcher, &paths, &opts).unwrap();
        (r, t.elapsed().as_secs_f64() * 1000.0 / paths.len() as f64)
    };
    let (approx, ta) = run(false);
    let (exact, te) = run(true);
    let mut hit = 0;
    for (a, e) in approx.iter().zip(&exact) {
        let want: Vec<i64> = e.neighbours.iter().map(|n| n.id).collect();
        hit += a.neighbours.iter().filter(|n| want.contains(&n.id)).count();
    }
    let recall = hit as f64 / (paths.len() * k) as f64;
    println!("recall index_size={total} queries={} k={k} recall={recall:.4} hnsw_ms_per_query={ta:.2} exact_ms_per_query={te:.2}", paths.len());
}

/// `n` stored vectors spread over `store`: (id, vector).
fn sample_rows(store: &fc7::search::store::Store, n: usize) -> Vec<(i64, Vec<f32>)> {
    let rows = store.catalog.slots_after(0).unwrap();
    let view = store.vectors().unwrap();
    let step = (rows.len() / n.max(1)).max(1);
    rows.iter()
        .step_by(step)
        .take(n)
        .map(|(id, slot)| (*id, view.row(*slot).unwrap()))
        .collect()
}

/// Exact top-k ids for each query over every row, a block of rows at a time: the nearest
/// `k + 16` by the product form (‖a‖² + ‖b‖² − 2a·b, fast but cancelling when two vectors are
/// near copies of each other), then re-ranked by the direct sum of squared differences, which
/// is what the searchers compare; without it, near-ties among near copies make the "truth"
/// itself wrong at the k-th place.
fn exact_ids(
    store: &fc7::search::store::Store,
    queries: &[f32],
    dim: usize,
    k: usize,
) -> Vec<Vec<i64>> {
    let rows = store.catalog.slots_after(0).unwrap();
    let view = store.vectors().unwrap();
    let nq = queries.len() / dim;
    let wide = k + 16;
    let mut best: Vec<Vec<(i64, f32, i64)>> = vec![Vec::new(); nq];
    for block in rows.chunks(16_384) {
        let base: Vec<f32> = block
            .par_iter()
            .flat_map_iter(|r| view.row(r.1).unwrap())
            .collect();
        for (q, hits) in fc7::search::knn::exact_knn(queries, &base, dim, wide)
            .into_iter()
            .enumerate()
        {
            best[q].extend(hits.into_iter().map(|(i, d)| (block[i].0, d, block[i].1)));
            best[q].sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            best[q].truncate(wide);
        }
    }
    best.into_iter()
        .zip(queries.chunks(dim))
        .map(|(b, q)| {
            let mut direct: Vec<(i64, f32)> = b
                .iter()
                .map(|&(id, _, slot)| {
                    let v = view.row(slot).unwrap();
                    (id, fc7::search::knn::l2(q, &v))
                })
                .collect();
            fc7::search::knn::sort_hits(&mut direct);
            direct.into_iter().take(k).map(|h| h.0).collect()
        })
        .collect()
}

fn recall_vectors(index: &Path, n: usize, k: usize, candidates: &[usize]) {
    let store = fc7::search::store::Store::open_read(index).unwrap();
    let sample = sample_rows(&store, n);
    let dim = sample[0].1.len();
    let flat: Vec<f32> = sample.iter().flat_map(|s| s.1.iter().copied()).collect();
    let t = Instant::now();
    let truth = exact_ids(&store, &flat, dim, k + 1);
    let exact_ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let total = store.catalog.count("images").unwrap();
    for &c in candidates {
        let s = fc7::search::searcher::Searcher::open(&store, false, Some(c)).unwrap();
        let t = Instant::now();
        let mut hit = 0;
        for ((id, v), want) in sample.iter().zip(&truth) {
            let got = s.nearest(v, k + 1).unwrap();
            let want: Vec<&i64> = want.iter().filter(|w| *w != id).take(k).collect();
            hit += got
                .iter()
                .filter(|h| h.0 != *id && want.contains(&&h.0))
                .count();
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!(
            "recall-vectors index_size={total} queries={n} k={k} candidates={c} recall={:.4} ms_per_query={ms:.2} exact_ms_per_query={exact_ms:.1}",
            hit as f64 / (n * k) as f64
        );
    }
}

fn synth_index(src: &Path, out: &Path, n: usize) {
    use fc7::search::catalog::{Meta, NewImage};
    use rand::{Rng, SeedableRng};
    let real = sample_rows(
        &fc7::search::store::Store::open_read(src).unwrap(),
        usize::MAX,
    );
    let dim = real[0].1.len();
    let mut sd = vec![0.0f64; dim];
    let mut mean = vec![0.0f64; dim];
    for (_, v) in &real {
        for j in 0..dim {
            mean[j] += v[j] as f64 / real.len() as f64;
        }
    }
    for (_, v) in &real {
        for j in 0..dim {
            sd[j] += (v[j] as f64 - mean[j]).powi(2) / real.len() as f64;
        }
    }
    let noise: Vec<f32> = sd.iter().map(|v| (v.sqrt() * 0.25) as f32).collect();
    let files = out.with_extension("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut store = fc7::search::store::Store::open_for_update(out).unwrap();
    store.catalog.set_meta(Meta::Dim, &dim.to_string()).unwrap();
    let t = Instant::now();
    for start in (0..n).step_by(10_000) {
        let m = 10_000.min(n - start);
        let rows: Vec<f32> = (start..start + m)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                let base = &real[rng.random_range(0..real.len())].1;
                let normal = rand_distr::Normal::new(0.0f32, 1.0).unwrap();
                let v: Vec<f32> = base
                    .iter()
                    .zip(&noise)
                    .map(|(x, s)| {
                        (x + s * rand_distr::Distribution::sample(&normal, &mut rng)).max(0.0)
                    })
                    .collect();
                v
            })
            .collect();
        let paths: Vec<PathBuf> = (start..start + m)
            .map(|i| {
                if i < 10 {
                    let p = std::path::absolute(files.join(format!("q{i}.jpg"))).unwrap();
                    std::fs::write(&p, format!("query {i}")).unwrap();
                    p
                } else {
                    PathBuf::from(format!("/synthetic/{i:07}.jpg"))
                }
            })
            .collect();
        let facts: Vec<(u64, i64)> = paths
            .iter()
            .map(|p| {
                std::fs::metadata(p).map_or((1, 1), |m| (m.len(), fc7::imaging::scan::mtime_ns(&m)))
            })
            .collect();
        store
            .write_batch(&rows, |w, first| {
                for (i, p) in paths.iter().enumerate() {
                    w.insert(&NewImage {
                        path: p,
                        size: facts[i].0,
                        mtime_ns: facts[i].1,
                        hash: &(start + i).to_le_bytes(),
                        width: 1,
                        height: 1,
                        slot: first + i as i64,
                    })?;
                }
                Ok(())
            })
            .unwrap();
    }
    println!(
        "synth-index rows={n} write_s={:.1}",
        t.elapsed().as_secs_f64()
    );
    rebuild_graph(&mut store);
}

fn rebuild_graph(store: &mut fc7::search::store::Store) {
    let n = store.catalog.count("images").unwrap();
    store
        .catalog
        .clear_meta(fc7::search::catalog::Meta::Graph)
        .unwrap();
    let t = Instant::now();
    let r = store.refresh_graph(None).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "graph={r:?} build_s={s:.1} vectors_per_s={:.0}",
        n as f64 / s
    );
}

fn train_step(preset: &str, batch: usize, iters: usize, device: &str, classes: usize) {
    let recipe = fc7::train::recipe::preset(preset).unwrap();
    let cfg = fc7::train::recipe::architecture(&recipe, classes);
    let (engine, rate) = match device {
        "cpu" => (
            fc7::train::engine::Engine::describe(&fc7::train::engine::cpu::Cpu),
            fc7::train::throughput::step_rate(&fc7::train::engine::cpu::Cpu, &cfg, batch, iters),
        ),
        _ => {
            let gpu = fc7::train::engine::cuda::Cuda::new(0).unwrap();
            let name = fc7::train::engine::Engine::describe(&gpu);
            (
                name,
                fc7::train::throughput::step_rate(&gpu, &cfg, batch, iters),
            )
        }
    };
    println!(
        "train-step preset={preset} input={} batch={batch} iters={iters} engine=\"{engine}\" isa={} images/s={:.1}",
        cfg.input,
        fc7::util::isa::widest(),
        rate.unwrap()
    );
}

/// Where a CPU training step's time goes: each operation and layer's share of `iters` steps.
fn train_profile(preset: &str, batch: usize, iters: usize, classes: usize) {
    let recipe = fc7::train::recipe::preset(preset).unwrap();
    let cfg = fc7::train::recipe::architecture(&recipe, classes);
    let e = fc7::train::engine::timed::Timed::new(fc7::train::engine::cpu::Cpu);
    // A first run warms the kept heap, so the measured run's two warm-up steps, which the
    // totals below include, do not fault their memory in.
    fc7::train::throughput::step_rate(&e, &cfg, batch, 1).unwrap();
    e.take();
    let t = std::time::Instant::now();
    let rate = fc7::train::throughput::step_rate(&e, &cfg, batch, iters).unwrap();
    let all = t.elapsed().as_secs_f64();
    println!("train-profile preset={preset} batch={batch} iters={iters} images/s={rate:.1}");
    // Weights go to the engine once per measurement, not once per step.
    for (op, d, calls) in e.take().into_iter().filter(|(op, _, _)| op != "upload") {
        let s = d.as_secs_f64();
        println!(
            "  {:>6.1}%  {:>8.2} ms/step  {calls:>5} calls  {op}",
            100.0 * s / all,
            1e3 * s / (iters + 2) as f64
        );
    }
}

/// fc7's LRN loops (`infer::lrn`) on one thread over the paper network's first LRN at batch 32.
fn lrn(iters: usize) {
    use fc7::infer::lrn::{normalise, LrnParams};
    let p = LrnParams::from(fc7::model::Lrn::PAPER);
    let (n, c, hw) = (32, 96, 55 * 55);
    let x: Vec<f32> = (0..n * c * hw).map(|i| (i % 97) as f32 * 0.3).collect();
    let mut y = vec![0.0; x.len()];
    for (layout, inner) in [("NCHW", hw), ("NHWC", 1)] {
        normalise(&x, &mut y, c, inner, &p);
        let t = Instant::now();
        for _ in 0..iters {
            normalise(&x, &mut y, c, inner, &p);
        }
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gb = 8.0 * x.len() as f64 / s / 1e9;
        println!(
            "lrn {layout} [32, 96, 55, 55], one thread: {:.2} ms ({gb:.1} GB/s in + out)",
            s * 1e3
        );
    }
    use fc7::infer::qlrn::{normalise_u8, Quant};
    let q: Vec<u8> = (0..x.len()).map(|i| (i % 251) as u8).collect();
    let mut out = vec![0u8; q.len()];
    let s = (
        Quant {
            scale: 0.1,
            zero: 0,
        },
        Quant {
            scale: 0.05,
            zero: 0,
        },
    );
    normalise_u8(&q, &mut out, c, s, &p);
    let t = Instant::now();
    for _ in 0..iters {
        normalise_u8(&q, &mut out, c, s, &p);
    }
    let s = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "qlrn NHWC uint8 [32, 55, 55, 96], one thread: {:.2} ms",
        s * 1e3
    );
}

fn main() {
    let a: Vec<String> = std::env::args()
        .skip(1)
        .filter(|s| s != "--bench")
        .collect();
    let p = |i: usize| PathBuf::from(&a[i]);
    let n = |i: usize| a[i].parse::<usize>().unwrap();
    match a.first().map(String::as_str) {
        Some("make-photos") => make_photos(&p(1), n(2) as u32, n(3) as u32, n(4) as u32),
        Some("extract") => extract(
            &p(1),
            &a[2],
            n(3),
            n(4),
            a.get(5).is_some_and(|m| m == "plain"),
        ),
        Some("lrn") => lrn(n(1)),
        Some("fc-update") => fc::update(n(1), n(2), n(3), n(4)),
        Some("fc-products") => fc::products(n(1), n(2), n(3), n(4)),
        Some("sparse-products") => fc::sparse(n(1), n(2), n(3), n(4), n(5)),
        Some("agree") => agree(&p(1), &p(2), n(3)),
        Some("agree-models") => agree_models(&p(1), &p(2), &p(3), n(4), n(5)),
        Some("decode") => decode(&p(1), n(2)),
        Some("recall") => recall(&p(1), n(2), n(3)),
        Some("recall-vectors") => {
            let c: Vec<usize> = a[4..].iter().map(|x| x.parse().unwrap()).collect();
            recall_vectors(&p(1), n(2), n(3), &c)
        }
        Some("synth-index") => synth_index(&p(1), &p(2), n(3)),
        Some("rebuild-graph") => {
            rebuild_graph(&mut fc7::search::store::Store::open_for_update(&p(1)).unwrap())
        }
        Some("train-step") => train_step(
            &a[1],
            n(2),
            n(3),
            a.get(4).map_or("cpu", String::as_str),
            a.get(5).map_or(1000, |c| c.parse().expect("CLASSES")),
        ),
        Some("train-profile") => train_profile(&a[1], n(2), n(3), n(4)),
        Some("pg-load") => pg::load(&p(1), &a[2], n(3)),
        Some("pg-recall") => {
            let c: Vec<usize> = a[5..].iter().map(|x| x.parse().unwrap()).collect();
            pg::recall(&p(1), &a[2], n(3), n(4), &c)
        }
        Some("feed") => feed(&p(1), n(2), n(3), n(4), n(5), &p(6)),
        _ => eprintln!("usage: see the header of benches/fc7bench.rs"),
    }
}
