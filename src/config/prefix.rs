//! `PrefixTuningConfig`: AdapterHub's config of prefix tuning (architecture `"prefix_tuning"`).

use serde::{Deserialize, Serialize};

use super::Activation;
use crate::error::{Error, Result};

/// Configuration of prefix tuning (Li & Liang, 2021; AdapterHub's `PrefixTuningConfig`), field
/// for field.
///
/// Every attention layer not in `leave_out` attends to `prefix_length` extra key/value positions
/// before the input's. The prefixes of all layers come from one module per adapter: trained
/// directly (`flat`) or, by default, produced by a small MLP from `prefix_length` embeddings
/// (`hidden → bottleneck_size → layers · 2 · kv_heads · head_dim`), which
/// [`eject_prefix_tuning`](crate::AdapterModel::eject_prefix_tuning) folds into the flat form
/// for inference.
///
/// Its JSON form carries `"architecture": "prefix_tuning"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "architecture",
    rename = "prefix_tuning",
    deny_unknown_fields,
    default = "PrefixTuningConfig::prefix_tuning"
)]
pub struct PrefixTuningConfig {
    /// Prefixes in the encoder of an encoder-decoder model. The hosts of this crate have no
    /// encoder-decoder split (as in AdapterHub, a self-attention prefix of an encoder-only or
    /// decoder-only model does not read it); kept for the files.
    pub encoder_prefix: bool,
    /// Prefixes in the cross-attention of an encoder-decoder model (see `encoder_prefix`).
    pub cross_prefix: bool,
    /// Layer indices that get no prefix.
    pub leave_out: Vec<usize>,
    /// Train the prefixes directly instead of through the MLP.
    pub flat: bool,
    /// Key/value positions added to every attention layer.
    pub prefix_length: usize,
    /// Width of the MLP's hidden layer (without `flat`).
    pub bottleneck_size: usize,
    /// The MLP's non-linearity (default `tanh`).
    pub non_linearity: Activation,
    /// Dropout on the prefixes while training.
    pub dropout: f64,
    /// A learned gate per layer that scales the prefixes by the mean over the sequence of
    /// `sigmoid(W h + b)` of the attention input (UniPELT's gating).
    pub use_gating: bool,
    /// One gate value for keys and values (else one each).
    pub shared_gating: bool,
    /// Seed of the initialisation.
    pub init_weights_seed: Option<u64>,
}

impl PrefixTuningConfig {
    /// The `prefix_tuning` preset: 30 positions through an MLP of width 512 with `tanh`.
    pub fn prefix_tuning() -> Self {
        Self {
            encoder_prefix: true,
            cross_prefix: true,
            leave_out: Vec::new(),
            flat: false,
            prefix_length: 30,
            bottleneck_size: 512,
            non_linearity: Activation::Tanh,
            dropout: 0.0,
            use_gating: false,
            shared_gating: true,
            init_weights_seed: None,
        }
    }

    /// The `prefix_tuning_flat` preset: 30 positions trained directly.
    pub fn prefix_tuning_flat() -> Self {
        Self {
            flat: true,
            ..Self::prefix_tuning()
        }
    }

    /// The preset of that name, if it is a prefix-tuning preset.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "prefix_tuning" => Some(Self::prefix_tuning()),
            "prefix_tuning_flat" => Some(Self::prefix_tuning_flat()),
            _ => None,
        }
    }

    /// Checks every field's domain.
    pub fn validate(&self) -> Result<()> {
        if self.prefix_length == 0 {
            return Err(Error::invalid(
                "prefix_length",
                0,
                "a prefix needs at least one position",
            ));
        }
        if !self.flat && self.bottleneck_size == 0 {
            return Err(Error::invalid(
                "bottleneck_size",
                0,
                "the prefix MLP needs a hidden layer of at least one unit",
            ));
        }
        super::values::check_probability("dropout", self.dropout)
    }

    /// Whether this config puts a prefix in layer `layer`.
    pub fn places_at(&self, layer: usize) -> bool {
        !self.leave_out.contains(&layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_adapterhub_defaults() {
        let json = serde_json::to_value(PrefixTuningConfig::prefix_tuning()).unwrap();
        let expected = serde_json::json!({
            "architecture": "prefix_tuning", "encoder_prefix": true, "cross_prefix": true,
            "leave_out": [], "flat": false, "prefix_length": 30, "bottleneck_size": 512,
            "non_linearity": "tanh", "dropout": 0.0, "use_gating": false,
            "shared_gating": true, "init_weights_seed": null,
        });
        assert_eq!(json, expected);
        assert!(PrefixTuningConfig::prefix_tuning_flat().flat);
    }
}
