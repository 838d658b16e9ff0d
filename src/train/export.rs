//! A trained network as an ONNX model with its manifest: preprocessing from the run's colour
//! statistics, provenance (recipe, engine, dataset, validation errors) for whoever uses it.

use std::path::Path;

use crate::error::Result;
use crate::model::manifest::{write_model, ModelInfo};
use crate::model::{Param, Preprocess};
use crate::train::checkpoint::{self, State};

/// What exemplar training's manifest says of it: the folder, its surrogate classes, the
/// views, and how well the held-out views were recognised.
fn exemplar_provenance(st: &State) -> Option<serde_json::Value> {
    let ex = st.recipe.exemplar.as_ref()?;
    let last = st.history.last();
    Some(serde_json::json!({
        "folder": st.data,
        "surrogate_classes": st.classes.len(),
        "views": ex,
        "self_supervised": st.recipe.instance,
        "held_out_view_top1_error": last.map(|l| l.val_top1_error),
        "folder_precision_at_6": last.and_then(|l| l.folder_precision_at_6),
    }))
}

/// Writes a model (ONNX + manifest) from a training state. An exemplar model is written
/// without fc8: its classes are the training images themselves, of no use to whoever indexes
/// with it, and thousands of them would outweigh the rest of the network.
pub fn export(
    st: &State,
    params: &[Param],
    path: &Path,
    ten_crop: Option<(f32, f32)>,
) -> Result<()> {
    let r = &st.recipe;
    let last = st.history.last();
    let exemplar = exemplar_provenance(st);
    let (mut config, mut params, mut classes) = (st.config.clone(), params, st.classes.clone());
    if exemplar.is_some() {
        // conv1..5, fc6, fc7, fc8 (w, b): fc8 is the last pair.
        config.classes = 0;
        params = &params[..params.len() - 2];
        classes = Vec::new();
    }
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
        "exemplar": exemplar,
    });
    let preprocess = Preprocess {
        resize: r.side as u32,
        crop: r.crop as u32,
        mean: st.stats.mean,
        std: st.stats.std,
        scale: 255.0,
        channel_order: "RGB".into(),
        standardise: st.stats.standardise,
    };
    write_model(
        path,
        &config,
        params,
        ModelInfo {
            classes,
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
