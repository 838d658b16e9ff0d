//! Arguments more than one command takes: where inference runs (`RuntimeArgs`) and the
//! training recipe's settings (`RecipeArgs`), each flag defined once.

use std::path::PathBuf;

use clap::Args;

use crate::device::Device;
use crate::infer::embed::EmbedOptions;
use crate::model::{Init, Standardise};
use crate::search::index::Location;
use crate::train::engine::Math;
use crate::train::exemplar::Exemplar;
use crate::train::instance::{Instance, Target};
use crate::train::recipe::Recipe;

/// `--index`, for every command that reads or writes an index.
#[derive(Args, Clone)]
pub struct IndexArg {
    /// The index: a folder (default: indexes/default in fc7's home) or a PostgreSQL store,
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?table=NAME] (PG* variables fill the rest).
    #[arg(long = "index", default_value_os_t = crate::home::default_index())]
    pub path: PathBuf,
}

impl IndexArg {
    pub fn location(&self) -> Location {
        Location::parse(&self.path)
    }
}

#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// auto (CUDA if it loads, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// ONNX Runtime library (else $ORT_DYLIB_PATH, else the cache of scripts/setup/ort.sh).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = crate::imaging::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

impl RuntimeArgs {
    pub fn embed(&self) -> EmbedOptions {
        let mut o = EmbedOptions {
            device: self.device,
            ort_lib: self.ort_lib.clone(),
            ..Default::default()
        };
        if let Some(t) = self.threads {
            o.threads = t;
        }
        o
    }
}

/// Declares each recipe flag once: its doc line, field and type; `apply` overrides the preset.
macro_rules! recipe_args {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty,)*) => {
        /// The recipe's settings; each one left out keeps the preset's value.
        #[derive(Args, Clone, Default)]
        pub struct RecipeArgs {
            $($(#[doc = $doc])* #[arg(long)] pub $field: Option<$ty>,)*
        }

        impl RecipeArgs {
            pub fn apply(&self, r: &mut Recipe) {
                $(if let Some(v) = self.$field { r.$field = v; })*
            }
        }
    };
}

recipe_args! {
    epochs: usize,
    batch: usize,
    lr: f32,
    seed: u64,
    /// 2: the paper's two-column layout (groups in conv2, conv4, conv5); 1: one column.
    columns: usize,
    val_fraction: f32,
    /// Run the last N epochs at a tenth of --lr (paper: 0, the plateau rule alone; quick: 1).
    anneal_epochs: usize,
    /// SGD momentum (paper: 0.9).
    momentum: f32,
    /// Weight decay in the paper's update v ← m·v − wd·ε·w − ε·∂L/∂w (paper: 5e-4).
    weight_decay: f32,
    /// Dropout probability on fc6 and fc7 (paper: 0.5).
    dropout: f32,
    /// Standard deviation of the PCA colour shift's α (paper: 0.1; 0 turns it off).
    pca_std: f32,
    /// How many times the plateau rule may divide the learning rate by 10 (paper: 3).
    max_lr_drops: usize,
    /// Initial weights: he (Kaiming-normal, zero biases; both presets' default), paper
    /// (N(0, 0.01), biases 1: stays at chance on Fashion-MNIST) or caffe (biases 0.1).
    init: Init,
    /// The GPU's arithmetic for convolutions and fully connected layers: tf32 (default),
    /// fp32, or bf16 (tensor cores, FP32 master weights and update; CUDA only).
    precision: Math,
    /// channels: the input standardised by the training set's mean and deviation per channel
    /// (the default); image: by each image's own, so a brighter or darker copy is the same
    /// input (--exemplar's and --self-supervised's default).
    standardise: Standardise,
}

/// Training on an unlabelled folder (exemplar or self-supervised) and its views' flags; each
/// left out keeps `Exemplar::default()`'s (or `--self-supervised`'s) value.
#[derive(Args, Clone, Default)]
#[group(skip)]
pub struct ExemplarArgs {
    /// Learn from an unlabelled folder: DATA is any photo folder, each image (or --surrogates of
    /// them) its own class, learnt from random views of it (Dosovitskiy et al. 2014). The model
    /// is written without fc8. Default epochs: 36 (quick), 60 (paper); no dropout.
    #[arg(long, group = "unlabelled")]
    pub exemplar: bool,
    /// Learn from an unlabelled folder by instance discrimination (Wu et al. 2018): every
    /// image is its own class, told apart through a 128-d normalised embedding head on fc7
    /// (dropped at export) against a memory bank of every image's last embedding, so a step
    /// costs the same for 1,000 images or 1,000,000, and all of them are trained on.
    /// --exemplar's views, two of each image a step; 100 epochs (paper); quick: 20, or on a
    /// smaller folder than 60,000 images more: enough to see 1.2 million images, each at most
    /// 150 times (8,000 images: 150 epochs; 2,000: 75).
    #[arg(long, group = "unlabelled", conflicts_with = "exemplar")]
    pub self_supervised: bool,
    /// Self-supervised: τ, the temperature of the scores (default 0.1).
    #[arg(long, requires = "self_supervised", conflicts_with = "exemplar")]
    pub temperature: Option<f32>,
    /// Self-supervised: the share of a bank row kept when its image is seen again (default 0.5).
    #[arg(long, requires = "self_supervised", conflicts_with = "exemplar")]
    pub bank_momentum: Option<f32>,
    /// Self-supervised: bank rows drawn as negatives for each step, beside the step's own views
    /// (default 256).
    #[arg(long, requires = "self_supervised", conflicts_with = "exemplar")]
    pub negatives: Option<usize>,
    /// Self-supervised: weight of a second task beside instance discrimination, predicting a
    /// picture of the whole image from each view (--reconstruct-target), so that images alike
    /// in shape stay near (default 50, at a tenth of the preset's rate; 0: instance
    /// discrimination alone, at the preset's rate).
    #[arg(long, requires = "self_supervised", conflicts_with = "exemplar")]
    pub reconstruct: Option<f32>,
    /// Self-supervised: what --reconstruct predicts: `hog`, a histogram of oriented gradients
    /// of a 32×32 grey thumbnail (edges and their directions), or `thumbnail`, the 16×16
    /// colour thumbnail (default hog).
    #[arg(long, requires = "self_supervised", conflicts_with = "exemplar")]
    pub reconstruct_target: Option<Target>,
    /// Surrogate classes: images drawn with --seed when the folder has more (default 2000).
    #[arg(long, requires = "exemplar")]
    pub surrogates: Option<usize>,
    /// Largest shift of a view, as a fraction of the crop side (default 0.1).
    #[arg(long, requires = "unlabelled")]
    pub translate: Option<f32>,
    /// Scales drawn from [1/ZOOM, ZOOM] (default 1.2).
    #[arg(long, requires = "unlabelled")]
    pub zoom: Option<f32>,
    /// Rotations drawn from ±DEGREES (default 10).
    #[arg(long, requires = "unlabelled")]
    pub rotate: Option<f32>,
    /// Contrast factors drawn from [1/C, C] (default 1.3).
    #[arg(long, requires = "unlabelled")]
    pub contrast: Option<f32>,
    /// Saturation factors drawn from [1/S, S] (default 1.3).
    #[arg(long, requires = "unlabelled")]
    pub saturation: Option<f32>,
    /// Hue turns drawn from ±HUE of the colour wheel (default 0.03).
    #[arg(long, requires = "unlabelled")]
    pub hue: Option<f32>,
    /// Brightness shifts drawn from ±B of the full range (default 0.05).
    #[arg(long, requires = "unlabelled")]
    pub brightness: Option<f32>,
    /// Gain (exposure) factors drawn from [1/G, G], every channel scaled about black, as a
    /// brighter photo is (default 1: none).
    #[arg(long, requires = "unlabelled")]
    pub gain: Option<f32>,
    /// Views an epoch shows at least: each surrogate is shown ⌈N / surrogates⌉ times (default 8000).
    #[arg(long, requires = "unlabelled")]
    pub epoch_views: Option<usize>,
}

impl ExemplarArgs {
    /// `recipe` turned into the exemplar or self-supervised recipe asked for, if one was.
    pub fn apply(&self, recipe: Recipe) -> Recipe {
        use crate::train::recipe;
        match (self.exemplar(), self.self_supervised) {
            (Some(ex), false) => recipe::exemplar(recipe, ex),
            (Some(ex), true) => {
                let mut i = Instance::default();
                i.temperature = self.temperature.unwrap_or(i.temperature);
                i.bank_momentum = self.bank_momentum.unwrap_or(i.bank_momentum);
                i.negatives = self.negatives.unwrap_or(i.negatives);
                i.reconstruct = self.reconstruct.unwrap_or(i.reconstruct);
                i.target = self.reconstruct_target.unwrap_or(i.target);
                recipe::instance(recipe, ex, i)
            }
            (None, _) => recipe,
        }
    }

    /// The views asked for, if --exemplar or --self-supervised was.
    fn exemplar(&self) -> Option<Exemplar> {
        if !self.exemplar && !self.self_supervised {
            return None;
        }
        let mut ex = Exemplar::default();
        let set = |v: Option<f32>, field: &mut f32| *field = v.unwrap_or(*field);
        ex.surrogates = self.surrogates.unwrap_or(ex.surrogates);
        ex.epoch_views = self.epoch_views.unwrap_or(ex.epoch_views);
        set(self.translate, &mut ex.translate);
        set(self.zoom, &mut ex.zoom);
        set(self.rotate, &mut ex.rotate);
        set(self.contrast, &mut ex.contrast);
        set(self.saturation, &mut ex.saturation);
        set(self.hue, &mut ex.hue);
        set(self.brightness, &mut ex.brightness);
        set(self.gain, &mut ex.gain);
        Some(ex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        r: RecipeArgs,
    }

    #[test]
    fn every_flag_reaches_the_recipe_and_absent_ones_keep_the_preset() {
        let cli = Cli::parse_from([
            "t",
            "--epochs",
            "3",
            "--batch",
            "7",
            "--lr",
            "0.5",
            "--seed",
            "9",
            "--columns",
            "1",
            "--val-fraction",
            "0.25",
            "--anneal-epochs",
            "2",
            "--momentum",
            "0.8",
            "--weight-decay",
            "0.001",
            "--dropout",
            "0.3",
            "--pca-std",
            "0.2",
            "--max-lr-drops",
            "4",
            "--init",
            "caffe",
            "--precision",
            "bf16",
            "--standardise",
            "image",
        ]);
        let mut r = crate::train::recipe::preset("quick").unwrap();
        cli.r.apply(&mut r);
        let got = serde_json::to_value(&r).unwrap();
        let want = serde_json::json!({"epochs": 3, "batch": 7, "lr": 0.5, "seed": 9,
            "columns": 1, "val_fraction": 0.25, "anneal_epochs": 2, "momentum": 0.8f32,
            "weight_decay": 0.001f32, "dropout": 0.3f32, "pca_std": 0.2f32, "max_lr_drops": 4,
            "init": serde_json::to_value(Init::Caffe).unwrap(), "precision": "bf16",
            "standardise": "image"});
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{k}");
        }
        let mut kept = crate::train::recipe::preset("quick").unwrap();
        let before = serde_json::to_value(&kept).unwrap();
        RecipeArgs::default().apply(&mut kept);
        assert_eq!(serde_json::to_value(&kept).unwrap(), before);
    }
}
