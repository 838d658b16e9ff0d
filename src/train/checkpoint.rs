//! Training checkpoints: everything a run needs to continue exactly where it stopped (recipe,
//! schedule state, history, colour statistics, parameters and momentum), in one file written
//! atomically. Layout: b"FC7CKPT2", u64 header length, JSON header, every parameter and then
//! every momentum buffer as little-endian f32 in `param_shapes()` order, then for
//! self-supervised training the memory bank ([images, dim] f32), and last the SHA-256
//! of everything before it, so a damaged file is refused instead of resuming from bad weights.
//! (b"FC7CKPT1" files, without the checksum, still load.)

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{AlexNetConfig, Param};
use crate::train::augment::ColourStats;
use crate::train::recipe::Recipe;
use crate::util::le::{f32s_as_bytes, f32s_from_bytes};

const MAGIC: &[u8; 8] = b"FC7CKPT2";
const MAGIC_V1: &[u8; 8] = b"FC7CKPT1";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f32,
    pub train_error: f32,
    pub val_loss: f32,
    pub val_top1_error: f32,
    pub val_top5_error: f32,
    pub images_per_second: f32,
    pub seconds: f32,
    /// Exemplar training on a folder of class folders: the validation images' precision@6
    /// of class with fc7 (the classes are never trained on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_precision_at_6: Option<f32>,
}

/// Where a run is, between batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub config: AlexNetConfig,
    pub recipe: Recipe,
    pub classes: Vec<String>,
    pub stats: ColourStats,
    pub data: String,
    pub epoch: usize,
    pub next_batch: usize,
    pub lr: f32,
    pub lr_drops: usize,
    /// Infinite before the first validation; JSON has no infinity, so it is written as null.
    #[serde(deserialize_with = "null_as_infinity")]
    pub best_val_error: f32,
    pub epoch_loss_sum: f64,
    pub epoch_correct: usize,
    pub epoch_seen: usize,
    pub history: Vec<EpochRecord>,
    pub seconds: f64,
    /// SGD steps taken since the run began (older checkpoints lack it).
    #[serde(default)]
    pub steps: usize,
    /// The engine that last trained it (older checkpoints lack it).
    #[serde(default)]
    pub engine: String,
    /// Self-supervised training's memory bank: one unit row of the embedding per image
    /// ([classes, dim]); empty otherwise. Kept in the checkpoint's body, not its header.
    #[serde(skip)]
    pub bank: Vec<f32>,
}

impl State {
    /// How far the run has gone: "E of N epochs done", and " and B batches of epoch E+1"
    /// where it stopped inside one.
    pub fn done(&self) -> String {
        let within = match self.next_batch {
            0 => String::new(),
            b => format!(" and {b} batches of epoch {}", self.epoch + 1),
        };
        format!(
            "{} of {} epochs done{within}",
            self.epoch, self.recipe.epochs
        )
    }

    /// Floats the memory bank holds in a run of this recipe.
    fn bank_len(&self) -> usize {
        self.recipe
            .instance
            .as_ref()
            .map_or(0, |i| i.dim * self.classes.len())
    }
}

fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::INFINITY))
}

/// Written piece by piece, each hashed on its way to the file: a copy of the whole (0.5 GB for
/// the paper network) was most of a short run's time in the kernel, zeroing its fresh pages.
pub fn save(path: &Path, state: &State, params: &[Param], velocity: &[Vec<f32>]) -> Result<()> {
    use crate::util::fs::Hashing;
    use std::io::Write;
    let header = serde_json::to_vec(state).expect("state serialises");
    assert_eq!(state.bank.len(), state.bank_len(), "memory bank size");
    let floats = (params.iter().map(|p| p.data.as_slice()))
        .chain(velocity.iter().map(Vec::as_slice))
        .chain([state.bank.as_slice()]);
    crate::util::fs::atomic_write_with(path, |f| {
        let mut out = Hashing::new(f);
        out.write_all(MAGIC)?;
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for v in floats {
            out.write_all(&f32s_as_bytes(v))?;
        }
        crate::util::fault::point("checkpoint-written-but-its-checksum");
        let (f, sum) = out.finish();
        f.write_all(&sum)
    })?;
    crate::util::fs::remove_abandoned_temps(path);
    Ok(())
}

/// The run's state from a checkpoint's header alone (no weights read, no checksum: `load`
/// verifies the whole file), e.g. to build the engine a resumed run needs before loading it.
pub fn state_of(path: &Path) -> Option<State> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    if head[..8] != *MAGIC && head[..8] != *MAGIC_V1 {
        return None;
    }
    let hlen = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    let mut header = vec![0u8; usize::try_from(hlen).ok().filter(|&n| n < 1 << 26)?];
    f.read_exact(&mut header).ok()?;
    serde_json::from_slice(&header).ok()
}

pub fn load(path: &Path) -> Result<(State, Vec<Param>, Vec<Vec<f32>>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |why: &str| Error::Model {
        path: path.to_path_buf(),
        reason: format!("not a usable fc7 checkpoint: {why}"),
    };
    let bytes = match bytes.get(..8) {
        Some(m) if m == MAGIC && bytes.len() >= 48 => {
            let (body, sum) = bytes.split_at(bytes.len() - 32);
            if sha256(body) != sum {
                return Err(bad("checksum mismatch (the file is damaged or truncated)"));
            }
            body
        }
        Some(m) if m == MAGIC_V1 && bytes.len() >= 16 => &bytes[..],
        _ => return Err(bad("wrong magic")),
    };
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let header = bytes
        .get(16..16 + hlen)
        .ok_or_else(|| bad("short header"))?;
    let mut state: State = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let shapes = state.config.param_shapes();
    let total: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let body = &bytes[16 + hlen..];
    if body.len() != total * 8 + state.bank_len() * 4 {
        return Err(bad("parameter data has the wrong size"));
    }
    let mut at = 0;
    let mut take = |n: usize| {
        let v = f32s_from_bytes(&body[at..at + n * 4]);
        at += n * 4;
        v
    };
    let params: Vec<Param> = shapes
        .iter()
        .map(|(name, shape)| Param {
            name: name.clone(),
            shape: shape.clone(),
            data: take(shape.iter().product()),
        })
        .collect();
    let velocity = shapes
        .iter()
        .map(|(_, s)| take(s.iter().product()))
        .collect();
    state.bank = take(state.bank_len());
    Ok((state, params, velocity))
}
