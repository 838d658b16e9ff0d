//! An engine that times another: every call's wall time summed per operation and layer
//! (`conv_backward 64×5×5`, `linear_forward 4096→4096`), so a training step's cost can be
//! split on any machine (`fc7bench train-profile`). Only meaningful for engines whose calls
//! return when the work is done (the CPU engine); GPU calls are asynchronous.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::{Conv, Lrn};
use crate::train::engine::{Engine, Normalise, Sgd, Shape};

pub struct Timed<E> {
    inner: E,
    spent: Mutex<BTreeMap<String, (Duration, u64)>>,
}

impl<E: Engine> Timed<E> {
    pub fn new(inner: E) -> Self {
        Timed {
            inner,
            spent: Mutex::new(BTreeMap::new()),
        }
    }

    fn time<T>(&self, what: impl FnOnce() -> String, f: impl FnOnce(&E) -> T) -> T {
        let t = Instant::now();
        let out = f(&self.inner);
        let took = t.elapsed();
        let mut spent = self.spent.lock().expect("timer lock");
        let e = spent.entry(what()).or_default();
        e.0 += took;
        e.1 += 1;
        out
    }

    /// (operation, total time, calls), longest first; clears the totals.
    pub fn take(&self) -> Vec<(String, Duration, u64)> {
        let mut v: Vec<_> = std::mem::take(&mut *self.spent.lock().expect("timer lock"))
            .into_iter()
            .map(|(k, (d, n))| (k, d, n))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }
}

fn conv_name(op: &str, xs: Shape, c: &Conv) -> String {
    format!(
        "{op} {}→{} {}×{}/{} g{}",
        xs.c, c.out, c.kernel, c.kernel, c.stride, c.groups
    )
}

fn linear_name(op: &str, w: usize, o: usize) -> String {
    format!("{op} {}→{o}", w / o.max(1))
}

#[allow(clippy::too_many_arguments)]
impl<E: Engine<Tensor = Vec<f32>>> Engine for Timed<E> {
    type Tensor = Vec<f32>;
    type PoolSaved = E::PoolSaved;
    type LrnSaved = E::LrnSaved;

    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        self.time(|| "upload".into(), |e| e.upload(data))
    }
    fn download(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        self.time(|| "download".into(), |e| e.download(t))
    }
    fn download_into(&self, t: &Vec<f32>, host: &mut Vec<f32>) -> Result<()> {
        self.time(|| "download".into(), |e| e.download_into(t, host))
    }
    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        self.inner.zeros(len)
    }
    fn input(&self, px: &[u8], sh: &[[f32; 3]], n: &Normalise, s: Shape) -> Result<Vec<f32>> {
        self.time(|| "input".into(), |e| e.input(px, sh, n, s))
    }
    fn conv_forward(
        &self,
        x: &Vec<f32>,
        xs: Shape,
        w: &Vec<f32>,
        b: &Vec<f32>,
        c: &Conv,
    ) -> Result<(Vec<f32>, Shape)> {
        self.time(
            || conv_name("conv_forward", xs, c),
            |e| e.conv_forward(x, xs, w, b, c),
        )
    }
    fn conv_backward(
        &self,
        x: &Vec<f32>,
        xs: Shape,
        w: &Vec<f32>,
        c: &Conv,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        need_dx: bool,
    ) -> Result<Option<Vec<f32>>> {
        self.time(
            || conv_name("conv_backward", xs, c),
            |e| e.conv_backward(x, xs, w, c, dy, dw, db, need_dx),
        )
    }
    fn relu_forward(&self, x: &mut Vec<f32>, s: Shape) -> Result<()> {
        self.time(|| "relu_forward".into(), |e| e.relu_forward(x, s))
    }
    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>, s: Shape) -> Result<()> {
        self.time(|| "relu_backward".into(), |e| e.relu_backward(y, dy, s))
    }
    fn lrn_forward(&self, x: &Vec<f32>, xs: Shape, l: &Lrn) -> Result<(Vec<f32>, E::LrnSaved)> {
        self.time(|| "lrn_forward".into(), |e| e.lrn_forward(x, xs, l))
    }
    fn lrn_backward(
        &self,
        x: &Vec<f32>,
        y: &Vec<f32>,
        saved: &E::LrnSaved,
        xs: Shape,
        l: &Lrn,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        self.time(
            || "lrn_backward".into(),
            |e| e.lrn_backward(x, y, saved, xs, l, dy),
        )
    }
    fn pool_forward(&self, x: &Vec<f32>, xs: Shape) -> Result<(Vec<f32>, Shape, E::PoolSaved)> {
        self.time(|| "pool_forward".into(), |e| e.pool_forward(x, xs))
    }
    fn pool_backward(
        &self,
        x: &Vec<f32>,
        xs: Shape,
        y: &Vec<f32>,
        saved: &E::PoolSaved,
        dy: &Vec<f32>,
    ) -> Result<Vec<f32>> {
        self.time(
            || "pool_backward".into(),
            |e| e.pool_backward(x, xs, y, saved, dy),
        )
    }
    fn linear_forward(
        &self,
        x: &Vec<f32>,
        n: usize,
        w: &Vec<f32>,
        b: &Vec<f32>,
        o: usize,
    ) -> Result<Vec<f32>> {
        self.time(
            || linear_name("linear_forward", w.len(), o),
            |e| e.linear_forward(x, n, w, b, o),
        )
    }
    fn linear_backward(
        &self,
        x: &Vec<f32>,
        n: usize,
        w: &Vec<f32>,
        o: usize,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        self.time(
            || linear_name("linear_backward", w.len(), o),
            |e| e.linear_backward(x, n, w, o, dy, dw, db),
        )
    }
    fn linear_backward_sgd(
        &self,
        x: (&Vec<f32>, usize, usize),
        dy: &Vec<f32>,
        w: (&mut Vec<f32>, &mut Vec<f32>),
        b: (&mut Vec<f32>, &mut Vec<f32>),
        grads: (&mut Vec<f32>, &mut Vec<f32>),
        h: Sgd,
    ) -> Result<Vec<f32>> {
        let name = linear_name("linear_backward_sgd", w.0.len(), x.2);
        self.time(|| name, |e| e.linear_backward_sgd(x, dy, w, b, grads, h))
    }
    fn dropout(&self, h: &mut Vec<f32>, p: f32, seed: u64) -> Result<()> {
        self.time(|| "dropout".into(), |e| e.dropout(h, p, seed))
    }
    fn softmax_cross_entropy(
        &self,
        logits: &Vec<f32>,
        labels: &[u32],
        classes: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.time(
            || "softmax_cross_entropy".into(),
            |e| e.softmax_cross_entropy(logits, labels, classes),
        )
    }
    fn scale(&self, t: &mut Vec<f32>, a: f32) -> Result<()> {
        self.time(|| "scale".into(), |e| e.scale(t, a))
    }
    fn sgd_step(
        &self,
        w: &mut Vec<f32>,
        v: &mut Vec<f32>,
        g: &Vec<f32>,
        lr: f32,
        momentum: f32,
        decay: f32,
    ) -> Result<()> {
        self.time(
            || "sgd_step".into(),
            |e| e.sgd_step(w, v, g, lr, momentum, decay),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::engine::cpu::Cpu;

    #[test]
    fn timed_counts_each_call_under_its_layer_and_passes_results_through() {
        let t = Timed::new(Cpu);
        let (x, w, b) = (vec![1.0; 6], vec![0.5; 6], vec![0.25; 2]);
        let y = t.linear_forward(&x, 2, &w, &b, 2).unwrap();
        assert_eq!(y, Cpu.linear_forward(&x, 2, &w, &b, 2).unwrap());
        t.linear_forward(&x, 2, &w, &b, 2).unwrap();
        let mut h = vec![1.0; 4];
        t.relu_forward(&mut h, Shape::flat(2, 2)).unwrap();
        let spent = t.take();
        let calls: Vec<(&str, u64)> = spent.iter().map(|(k, _, n)| (k.as_str(), *n)).collect();
        assert!(calls.contains(&("linear_forward 3→2", 2)), "{calls:?}");
        assert!(calls.contains(&("relu_forward", 1)), "{calls:?}");
        assert!(t.take().is_empty());
    }
}
