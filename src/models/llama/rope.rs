//! Rotary position embeddings as transformers computes them for Llama-family models: the
//! "rotate half" layout, frequencies optionally rescaled (`"linear"`, `"llama3"`).

use std::f32::consts::PI;

use burn::tensor::{DType, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A rescaling of the rotary frequencies (`rope_scaling` in `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RopeScalingJson", into = "RopeScalingJson")]
pub enum RopeScaling {
    /// `"default"`: the frequencies as they are.
    Default,
    /// `"linear"`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `"llama3"`: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was trained with.
        original_max_position_embeddings: usize,
    },
}

/// `rope_scaling` as transformers writes it (`rope_type`, or `type` in older files).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RopeScalingJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rope_type: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    legacy_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_max_position_embeddings: Option<usize>,
}

impl TryFrom<RopeScalingJson> for RopeScaling {
    type Error = String;

    fn try_from(json: RopeScalingJson) -> std::result::Result<Self, String> {
        let kind = json.rope_type.or(json.legacy_type).unwrap_or_default();
        let need = |value: Option<f64>, key: &str| {
            value.ok_or_else(|| format!("rope type \"{kind}\" needs `{key}`"))
        };
        match kind.as_str() {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: need(json.factor, "factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: need(json.factor, "factor")?,
                low_freq_factor: need(json.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(json.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: json
                    .original_max_position_embeddings
                    .ok_or("rope type \"llama3\" needs `original_max_position_embeddings`")?,
            }),
            other => Err(format!(
                "rope type \"{other}\" is not supported (default, linear, llama3)"
            )),
        }
    }
}

impl From<RopeScaling> for RopeScalingJson {
    fn from(scaling: RopeScaling) -> Self {
        let mut json = RopeScalingJson {
            rope_type: None,
            legacy_type: None,
            factor: None,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
        };
        let kind = match scaling {
            RopeScaling::Default => "default",
            RopeScaling::Linear { factor } => {
                json.factor = Some(factor);
                "linear"
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                json.factor = Some(factor);
                json.low_freq_factor = Some(low_freq_factor);
                json.high_freq_factor = Some(high_freq_factor);
                json.original_max_position_embeddings = Some(original_max_position_embeddings);
                "llama3"
            }
        };
        json.rope_type = Some(kind.into());
        json
    }
}

impl RopeScaling {
    /// Checks the factors: finite and positive, `high_freq_factor > low_freq_factor`.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::invalid("rope_scaling", format!("{self:?}"), reason);
        match *self {
            RopeScaling::Default => Ok(()),
            RopeScaling::Linear { factor } if factor.is_finite() && factor > 0.0 => Ok(()),
            RopeScaling::Linear { .. } => Err(bad("`factor` must be positive".into())),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let positive = [factor, low_freq_factor, high_freq_factor]
                    .iter()
                    .all(|f| f.is_finite() && *f > 0.0);
                if !positive || original_max_position_embeddings == 0 {
                    Err(bad(
                        "factors and the original length must be positive".into()
                    ))
                } else if high_freq_factor <= low_freq_factor {
                    Err(bad(
                        "`high_freq_factor` must exceed `low_freq_factor`".into()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Rescales transformers' default frequencies, in f32 and in its order of operations.
    fn rescale(&self, inv_freq: f32) -> f32 {
        match *self {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor as f32,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old_context = original_max_position_embeddings as f32;
                let wavelen = 2.0 * PI / inv_freq;
                let scaled = if wavelen > old_context / low {
                    inv_freq / factor
                } else {
                    inv_freq
                };
                let medium = wavelen >= old_context / high && wavelen <= old_context / low;
                if medium {
                    let smooth = (old_context / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                }
            }
        }
    }
}

/// The rotary frequencies of one model.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// The frequencies of heads `head_dim` wide (even), base `theta`.
    pub(crate) fn new(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Self {
        let base = theta as f32;
        let inv_freq = (0..head_dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0 / base.powf(i as f32 / head_dim as f32);
                scaling.map_or(freq, |s| s.rescale(freq))
            })
            .collect();
        Self { inv_freq }
    }

    /// The cosines and sines at `positions`.
    ///
    /// # Shapes
    ///
    /// - positions: `[batch, seq]`
    pub(crate) fn tables(&self, positions: Tensor<2, Int>, dtype: DType) -> RopeTables {
        let [batch, seq] = positions.dims();
        let half = self.inv_freq.len();
        let inv_freq = Tensor::<1>::from_floats(self.inv_freq.as_slice(), &positions.device());
        let freqs = positions.float().reshape([batch, seq, 1]) * inv_freq.reshape([1, 1, half]);
        let angles = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([batch, 1, seq, 2 * half]);
        RopeTables {
            cos: angles.clone().cos().cast(dtype),
            sin: angles.sin().cast(dtype),
        }
    }
}

/// Cosines and sines at a batch's positions, `[batch, 1, seq, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RopeTables {
    /// Rotates `x` (`[batch, heads, seq, head_dim]`): `x·cos + rotate_half(x)·sin`.
    pub(crate) fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let rotated = Tensor::cat(
            vec![
                x.clone().narrow(3, half, half).neg(),
                x.clone().narrow(3, 0, half),
            ],
            3,
        );
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
