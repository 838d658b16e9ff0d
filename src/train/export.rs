//! A trained network as an ONNX model with its manifest: preprocessing from the run's colour
//! statistics, provenance (recipe, engine, dataset, validation errors) for whoever uses it.

use std::path::Path;

use crate::error::Result;
use crate::model::manifest::{write_model, ModelInfo};
use crate::model::{Param, Preprocess};
use crate::train::checkpoint::{self, State};

/// Writes a model (ONNX + manifest) from a training state.
pub fn export(
    st: &State,
    params: &[Param],
    path: &Path,
    ten_crop: Option<(f32, f32)>,
) -> Result<()> {
    let r = &st.recipe;
    let last = st.history.last();
    let provenance = serde_json::json!({
        "trained": true,
        "trainer": format!("fc7 {}", env!("CARGO_PKG_VERSION")),
        "engine": st.engine,
        "dataset": st.data,
        "epochs": st.epoch,
        "seconds": st.seconds,
        "recipe": r,
        "metrics": {
            "val_top1_error_centre": last.map(|l| l.val_top1_error),
            "val_top5_error_centre": last.map(|l| l.val_top5_error),
            "val_top1_error_10crop": ten_crop.map(|t| t.0),
            "val_top5_error_10crop": ten_crop.map(|t| t.1),
        },
        "colour_pca": st.stats,
    });
    let preprocess = Preprocess {
        resize: r.side as u32,
        crop: r.crop as u32,
        mean: st.stats.mean,
        std: st.stats.std,
        scale: 255.0,
        channel_order: "RGB".into(),
    };
    write_model(
        path,
        &st.config,
        params,
        ModelInfo {
            classes: st.classes.clone(),
            preprocess,
            provenance,
        },
    )
    .map(|_| ())
}

/// `fc7 export CHECKPOINT --out MODEL.onnx`.
pub fn export_checkpoint(ckpt: &Path, out: &Path) -> Result<State> {
    let (st, params, _) = checkpoint::load(ckpt)?;
    export(&st, &params, out, None)?;
    Ok(st)
}
