//! The graph on disk, laid out to be searched where it lies: one file, memory-mapped, whose
//! sections are flat arrays (PCA mean and basis, each node's catalog id and vector slot, the
//! codes, fixed-width neighbour lists), so a query reads the pages its search visits — a few
//! megabytes — instead of loading the whole graph. hnsw_rs builds the graph; this is its
//! layout for reading, and the HNSW search (greedy descent through the upper layers, then a
//! best-first beam at layer 0) over it.
//!
//! Layout (little endian, every section 8-byte aligned): a 64-byte header, then mean [dim] f32,
//! basis [code_dim, dim] f32, ids [n] i64, slots [n] u32, codes [n, code_dim] f32, layer 0
//! [n, m0] u32, upper nodes [u] u32 (sorted), their offsets [u + 1] u32 (in lists of m), upper
//! lists [.., m] u32. Empty places in a list hold `NONE`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"FC7GRAPH";
const VERSION: u32 = 1;
const HEADER: usize = 64;
pub const NONE: u32 = u32::MAX;

/// The numbers a graph file starts with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub dim: u32,
    pub code_dim: u32,
    pub m0: u32,
    pub m: u32,
    pub points: u64,
    pub upper: u64,
    pub upper_lists: u64,
    pub entry: u32,
    pub kept: f32,
}

/// Byte ranges of the sections, in file order.
fn sections(h: &Header) -> [std::ops::Range<usize>; 9] {
    let (n, d, c) = (h.points as usize, h.dim as usize, h.code_dim as usize);
    let sizes = [
        d * 4,
        c * d * 4,
        n * 8,
        n * 4,
        n * c * 4,
        n * h.m0 as usize * 4,
        h.upper as usize * 4,
        (h.upper as usize + 1) * 4,
        h.upper_lists as usize * h.m as usize * 4,
    ];
    let mut at = HEADER;
    sizes.map(|s| {
        let r = at..at + s;
        at = (at + s).div_ceil(8) * 8;
        r
    })
}

/// The file's bytes: header then sections, each as produced by `bytemuck::cast_slice`.
pub fn encode(h: &Header, parts: [&[u8]; 9]) -> Vec<u8> {
    let secs = sections(h);
    let mut out = vec![0u8; secs[8].end];
    out[..8].copy_from_slice(MAGIC);
    let words = [
        VERSION,
        h.dim,
        h.code_dim,
        h.m0,
        h.m,
        h.entry,
        h.kept.to_bits(),
    ];
    for (i, w) in words.iter().enumerate() {
        out[8 + i * 4..12 + i * 4].copy_from_slice(&w.to_le_bytes());
    }
    for (i, w) in [h.points, h.upper, h.upper_lists].iter().enumerate() {
        out[36 + i * 8..44 + i * 8].copy_from_slice(&w.to_le_bytes());
    }
    for (r, p) in secs.iter().zip(parts) {
        assert_eq!(r.len(), p.len(), "section size");
        out[r.clone()].copy_from_slice(p);
    }
    out
}

fn read_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER || &b[..8] != MAGIC {
        return None;
    }
    let w = |i: usize| u32::from_le_bytes(b[8 + i * 4..12 + i * 4].try_into().unwrap());
    let q = |i: usize| u64::from_le_bytes(b[36 + i * 8..44 + i * 8].try_into().unwrap());
    (w(0) == VERSION).then(|| Header {
        dim: w(1),
        code_dim: w(2),
        m0: w(3),
        m: w(4),
        entry: w(5),
        kept: f32::from_bits(w(6)),
        points: q(0),
        upper: q(1),
        upper_lists: q(2),
    })
}

/// A graph file, mapped.
pub struct FlatGraph {
    map: Mmap,
    pub header: Header,
    secs: [std::ops::Range<usize>; 9],
}

impl FlatGraph {
    /// Maps `path`; `None` when it is missing, truncated or not a graph of this version.
    pub fn open(path: &Path) -> Result<Option<FlatGraph>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        // SAFETY: graph files are written once under a new name and never modified.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // A search touches a few thousand scattered nodes: no readahead around each.
        let _ = map.advise(memmap2::Advice::Random);
        let Some(header) = read_header(&map) else {
            return Ok(None);
        };
        let secs = sections(&header);
        let entry_ok = header.points == 0 || (header.entry as u64) < header.points;
        Ok((map.len() == secs[8].end && entry_ok).then_some(FlatGraph { map, header, secs }))
    }

    fn section<T: bytemuck::Pod>(&self, i: usize) -> &[T] {
        bytemuck::cast_slice(&self.map[self.secs[i].clone()])
    }

    pub fn mean(&self) -> &[f32] {
        self.section(0)
    }
    pub fn basis(&self) -> &[f32] {
        self.section(1)
    }
    /// Catalog id of `node`.
    pub fn id(&self, node: u32) -> i64 {
        self.section::<i64>(2)[node as usize]
    }
    /// Vector slot of `node`.
    pub fn slot(&self, node: u32) -> u32 {
        self.section::<u32>(3)[node as usize]
    }

    /// The code of a full vector `q`: its PCA projection, [code_dim].
    pub fn encode(&self, q: &[f32]) -> Vec<f32> {
        let centred: Vec<f32> = q.iter().zip(self.mean()).map(|(x, m)| x - m).collect();
        crate::util::matmul::dot_rows(&centred, self.basis(), self.header.dim as usize)
    }

    fn code(&self, node: u32) -> &[f32] {
        let c = self.header.code_dim as usize;
        &self.section::<f32>(4)[node as usize * c..(node as usize + 1) * c]
    }

    fn links(&self, node: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let m0 = self.header.m0 as usize;
            return &self.section::<u32>(5)[node as usize * m0..(node as usize + 1) * m0];
        }
        let (nodes, offsets) = (self.section::<u32>(6), self.section::<u32>(7));
        let Ok(i) = nodes.binary_search(&node) else {
            return &[];
        };
        let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
        if layer > to - from {
            return &[];
        }
        let m = self.header.m as usize;
        let at = (from + layer - 1) * m;
        &self.section::<u32>(8)[at..at + m]
    }

    fn top_layer(&self) -> usize {
        let (nodes, offsets) = (self.section::<u32>(6), self.section::<u32>(7));
        nodes
            .binary_search(&self.header.entry)
            .map_or(0, |i| (offsets[i + 1] - offsets[i]) as usize)
    }

    fn dist2(&self, q: &[f32], node: u32) -> f32 {
        self.code(node)
            .iter()
            .zip(q)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    }

    /// The `ef` nodes nearest to `code` by code distance, nearest first: (node, squared
    /// distance).
    pub fn search(&self, code: &[f32], ef: usize) -> Vec<(u32, f32)> {
        let n = self.header.points as usize;
        if n == 0 || ef == 0 {
            return Vec::new();
        }
        let mut ep = self.header.entry;
        let mut best = self.dist2(code, ep);
        for layer in (1..=self.top_layer()).rev() {
            let mut moved = true;
            while moved {
                moved = false;
                for &nb in self.links(ep, layer).iter().take_while(|&&x| x != NONE) {
                    let d = self.dist2(code, nb);
                    if d < best {
                        (best, ep, moved) = (d, nb, true);
                    }
                }
            }
        }
        self.beam(code, ep, best, ef)
    }

    /// Best-first search of layer 0 from `ep`, keeping the `ef` nearest found.
    fn beam(&self, code: &[f32], ep: u32, d0: f32, ef: usize) -> Vec<(u32, f32)> {
        let key = |d: f32| d.to_bits(); // non-negative floats order like their bits
        let mut seen = vec![0u64; (self.header.points as usize).div_ceil(64)];
        let mut mark = |x: u32| {
            let (w, b) = (x as usize / 64, 1u64 << (x % 64));
            let fresh = seen[w] & b == 0;
            seen[w] |= b;
            fresh
        };
        mark(ep);
        let mut frontier = BinaryHeap::from([Reverse((key(d0), ep))]);
        let mut found = BinaryHeap::from([(key(d0), ep)]);
        while let Some(Reverse((d, node))) = frontier.pop() {
            if found.len() >= ef && d > found.peek().expect("non-empty").0 {
                break;
            }
            for &nb in self.links(node, 0).iter().take_while(|&&x| x != NONE) {
                if !mark(nb) {
                    continue;
                }
                let dn = key(self.dist2(code, nb));
                if found.len() < ef || dn < found.peek().expect("non-empty").0 {
                    frontier.push(Reverse((dn, nb)));
                    found.push((dn, nb));
                    if found.len() > ef {
                        found.pop();
                    }
                }
            }
        }
        let mut out: Vec<(u32, f32)> = found
            .into_iter()
            .map(|(d, n)| (n, f32::from_bits(d)))
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        out
    }
}
