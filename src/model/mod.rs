//! The AlexNet definition shared by the trainer, the ONNX writer and the embedder: layer
//! hyper-parameters, the parameter list (names, shapes), initialisation, and the manifest that
//! travels beside every exported model.

pub mod manifest;
pub mod onnx;
pub mod standardise;

pub use manifest::{Manifest, Precision, Preprocess, MANIFEST_FORMAT};
pub use standardise::Standardise;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Local response normalisation in the paper's convention: b = a / (k + α Σ a²)^β over `size`
/// neighbouring channels. (ONNX's LRN divides alpha by size; the writer converts.)
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl Lrn {
    pub const PAPER: Lrn = Lrn {
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 2.0,
    };
}

/// One convolution's geometry: output channels, square kernel, stride, padding, groups.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl Conv {
    pub const fn new(out: usize, kernel: usize, stride: usize, pad: usize, groups: usize) -> Self {
        Conv {
            out,
            kernel,
            stride,
            pad,
            groups,
        }
    }

    pub fn out_size(&self, input: usize) -> usize {
        (input + 2 * self.pad - self.kernel) / self.stride + 1
    }
}

/// The network: five convolutions (LRN after the first two, max-pool 3/2 after 1, 2 and 5), two
/// hidden fully connected layers (fc6, fc7), and an optional classifier (fc8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlexNetConfig {
    pub input: usize,
    pub convs: [Conv; 5],
    pub hidden: usize,
    pub classes: usize,
    pub lrn: Option<Lrn>,
}

pub const POOL_KERNEL: usize = 3;
pub const POOL_STRIDE: usize = 2;

pub fn pool_out(input: usize) -> usize {
    (input - POOL_KERNEL) / POOL_STRIDE + 1
}

impl AlexNetConfig {
    /// The network of Krizhevsky et al. 2012 with `columns` = 2 (groups in conv2, conv4, conv5).
    pub fn paper(classes: usize, columns: usize) -> Self {
        let c = Conv::new;
        AlexNetConfig {
            input: 224,
            convs: [
                c(96, 11, 4, 2, 1),
                c(256, 5, 1, 2, columns),
                c(384, 3, 1, 1, 1),
                c(384, 3, 1, 1, columns),
                c(256, 3, 1, 1, columns),
            ],
            hidden: 4096,
            classes,
            lrn: Some(Lrn::PAPER),
        }
    }

    /// Spatial size after each stage: [conv1 out, pool1, conv2, pool2, conv3..5, pool5].
    pub fn spatial(&self) -> Result<Vec<usize>, String> {
        let mut s = self.input;
        let mut sizes = Vec::new();
        for (i, conv) in self.convs.iter().enumerate() {
            if s + 2 * conv.pad < conv.kernel {
                return Err(format!("input {} too small for conv{}", self.input, i + 1));
            }
            s = conv.out_size(s);
            sizes.push(s);
            if matches!(i, 0 | 1 | 4) {
                if s < POOL_KERNEL {
                    return Err(format!("input {} too small for pool{}", self.input, i + 1));
                }
                s = pool_out(s);
                sizes.push(s);
            }
        }
        Ok(sizes)
    }

    pub fn flat_features(&self) -> Result<usize, String> {
        let last = *self.spatial()?.last().expect("five stages");
        Ok(self.convs[4].out * last * last)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut cin = 3;
        for (i, c) in self.convs.iter().enumerate() {
            if c.groups == 0 || cin % c.groups != 0 || c.out % c.groups != 0 {
                return Err(format!(
                    "conv{}: groups {} do not divide channels",
                    i + 1,
                    c.groups
                ));
            }
            cin = c.out;
        }
        self.flat_features().map(|_| ())
    }

    /// Parameter names and shapes in a fixed order: weights then bias per layer; convolution
    /// weights are [out, in/groups, k, k], fully connected weights [out, in].
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let mut cin = 3;
        for (i, c) in self.convs.iter().enumerate() {
            let name = format!("conv{}", i + 1);
            out.push((
                format!("{name}.w"),
                vec![c.out, cin / c.groups, c.kernel, c.kernel],
            ));
            out.push((format!("{name}.b"), vec![c.out]));
            cin = c.out;
        }
        let flat = self.flat_features().unwrap_or(0);
        let mut fc = |name: &str, i: usize, o: usize| {
            out.push((format!("{name}.w"), vec![o, i]));
            out.push((format!("{name}.b"), vec![o]));
        };
        fc("fc6", flat, self.hidden);
        fc("fc7", self.hidden, self.hidden);
        if self.classes > 0 {
            fc("fc8", self.hidden, self.classes);
        }
        out
    }
}

/// A named parameter tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// How to draw initial weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere (§5).
    Paper,
    /// Kaiming-normal weights (std = sqrt(2 / fan_in)), zero biases: random features that
    /// still tell images apart.
    He,
    /// Caffe's reference AlexNet (BVLC `bvlc_alexnet`): N(0, 0.01) weights (0.005 in fc6 and
    /// fc7) and biases of 0.1 where the paper has 1, "as initialization to 1 gave flat loss".
    Caffe,
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "paper" => Ok(Init::Paper),
            "he" => Ok(Init::He),
            "caffe" => Ok(Init::Caffe),
            _ => Err(format!("unknown init '{s}' (expected he, paper or caffe)")),
        }
    }
}

const PAPER_ONE_BIASES: [&str; 5] = ["conv2.b", "conv4.b", "conv5.b", "fc6.b", "fc7.b"];

/// Draws a full parameter set for `config` with a seeded generator.
pub fn init_params(config: &AlexNetConfig, init: Init, seed: u64) -> Vec<Param> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    config
        .param_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if name.ends_with(".b") {
                let value = match init {
                    _ if !PAPER_ONE_BIASES.contains(&name.as_str()) => 0.0,
                    Init::Paper => 1.0,
                    Init::Caffe => 0.1,
                    Init::He => 0.0,
                };
                vec![value; n]
            } else {
                let std = match init {
                    Init::Paper => 0.01,
                    Init::Caffe if name == "fc6.w" || name == "fc7.w" => 0.005,
                    Init::Caffe => 0.01,
                    Init::He => (2.0 / shape[1..].iter().product::<usize>() as f32).sqrt(),
                };
                let normal = Normal::new(0.0f32, std).expect("finite std");
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            Param { name, shape, data }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_shapes_match_the_paper() {
        let c = AlexNetConfig::paper(1000, 2);
        assert_eq!(c.spatial().unwrap(), vec![55, 27, 27, 13, 13, 13, 13, 6]);
        assert_eq!(c.flat_features().unwrap(), 9216);
        let total: usize = c
            .param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // The two-column network's parameter count (conv2/4/5 see half the channels).
        assert_eq!(total, 60_965_224);
        assert_eq!(c.param_shapes()[2].1, vec![256, 48, 5, 5]);
    }

    #[test]
    fn too_small_input_is_refused() {
        let mut c = AlexNetConfig::paper(10, 2);
        c.input = 32;
        assert!(c.validate().is_err());
    }

    /// A small two-column network's parameters under `init`.
    fn drawn(init: Init) -> Vec<Param> {
        let mut c = AlexNetConfig::paper(3, 2);
        c.input = 67;
        init_params(&c, init, 1)
    }

    /// Parameter `name`'s values and their root mean square.
    fn get(p: &[Param], name: &str) -> (Vec<f32>, f32) {
        let d = p.iter().find(|x| x.name == name).unwrap().data.clone();
        let rms = (d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32).sqrt();
        (d, rms)
    }

    #[test]
    fn paper_init_sets_the_papers_biases() {
        let p = drawn(Init::Paper);
        assert!(get(&p, "conv2.b").0.iter().all(|&v| v == 1.0));
        assert!(get(&p, "conv3.b").0.iter().all(|&v| v == 0.0));
        assert!(get(&p, "fc8.b").0.iter().all(|&v| v == 0.0));
        let std = get(&p, "fc6.w").1;
        assert!((std - 0.01).abs() < 0.001, "std {std}");
        let he = drawn(Init::He);
        let (std, want) = (get(&he, "conv1.w").1, (2.0f32 / 363.0).sqrt());
        assert!((std - want).abs() < 0.05 * want, "std {std} want {want}");
    }

    #[test]
    fn caffe_init_has_biases_of_a_tenth_and_narrower_fully_connected_weights() {
        let p = drawn(Init::Caffe);
        assert!(get(&p, "fc7.b").0.iter().all(|&v| v == 0.1));
        assert!(get(&p, "conv4.b").0.iter().all(|&v| v == 0.1));
        assert!(get(&p, "conv1.b").0.iter().all(|&v| v == 0.0));
        let (fc6, conv3) = (get(&p, "fc6.w").1, get(&p, "conv3.w").1);
        assert!((fc6 - 0.005).abs() < 0.0005, "{fc6}");
        assert!((conv3 - 0.01).abs() < 0.001, "{conv3}");
    }
}
