//! `ReftConfig`: AdapterHub's config of representation fine-tuning (architecture `"reft"`).

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::Activation;
use crate::error::{Error, Result};

/// The layers a ReFT intervenes after: `"all"` or a list of indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReftLayers {
    /// Every layer.
    All,
    /// These layers.
    Only(Vec<usize>),
}

impl ReftLayers {
    /// Whether `layer` is one of them.
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            ReftLayers::All => true,
            ReftLayers::Only(layers) => layers.contains(&layer),
        }
    }
}

impl Serialize for ReftLayers {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ReftLayers::All => serializer.serialize_str("all"),
            ReftLayers::Only(layers) => layers.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ReftLayers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            List(Vec<usize>),
        }
        match Form::deserialize(deserializer)? {
            Form::Name(name) if name == "all" => Ok(ReftLayers::All),
            Form::Name(name) => Err(serde::de::Error::custom(format!(
                "expected \"all\" or a list of layer indices, found {name:?}"
            ))),
            Form::List(layers) => Ok(ReftLayers::Only(layers)),
        }
    }
}

/// Configuration of ReFT interventions (Wu et al., 2024; AdapterHub's `ReftConfig`, presets
/// `loreft`, `noreft`, `direft`), field for field.
///
/// After each chosen layer, the hidden states of the first `prefix_positions` and the last
/// `suffix_positions` real tokens of every row become `h + (act(W h + b) − R h) Rᵀ`, with `R` a
/// `[r, hidden]` projection (kept orthogonal with `orthogonality`, as torch's parametrization
/// does) and `W`, `b` a learned source; `subtract_projection = false` drops `R h` (DiReFT).
///
/// Its JSON form carries `"architecture": "reft"`. AdapterHub does not write
/// `subtract_projection` (a class attribute), so its own DiReFT files reload as NoReFT; this
/// crate writes it when it is `false`, which AdapterHub reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "architecture",
    rename = "reft",
    deny_unknown_fields,
    default = "ReftConfig::loreft"
)]
pub struct ReftConfig {
    /// The layers intervened after.
    pub layers: ReftLayers,
    /// Real tokens intervened on at the start of each row.
    pub prefix_positions: usize,
    /// Real tokens intervened on at the end of each row.
    pub suffix_positions: usize,
    /// Rank of the intervention.
    pub r: usize,
    /// Keep the projection's rows orthonormal (torch's `orthogonal` parametrization).
    pub orthogonality: bool,
    /// One intervention for prefix and suffix positions (else one each).
    pub tied_weights: bool,
    /// Subtract the projection of the input (`false`: DiReFT).
    #[serde(skip_serializing_if = "is_true")]
    pub subtract_projection: bool,
    /// Dropout on the intervened states while training.
    pub dropout: f64,
    /// The source's non-linearity (`null`: none).
    pub non_linearity: Option<Activation>,
    /// Data type of the intervention (`None`: the model's); kept for the files.
    pub dtype: Option<String>,
    /// Intervene on the layers' outputs (AdapterHub's only placement).
    pub output_reft: bool,
    /// Seed of the initialisation.
    pub init_weights_seed: Option<u64>,
}

fn is_true(value: &bool) -> bool {
    *value
}

impl ReftConfig {
    /// The `loreft` preset: rank 1, orthogonal, the first 3 positions of every layer.
    pub fn loreft() -> Self {
        Self {
            layers: ReftLayers::All,
            prefix_positions: 3,
            suffix_positions: 0,
            r: 1,
            orthogonality: true,
            tied_weights: false,
            subtract_projection: true,
            dropout: 0.05,
            non_linearity: None,
            dtype: None,
            output_reft: true,
            init_weights_seed: None,
        }
    }

    /// The `noreft` preset: `loreft` without orthogonality.
    pub fn noreft() -> Self {
        Self {
            orthogonality: false,
            ..Self::loreft()
        }
    }

    /// The `direft` preset: `noreft` without subtracting the projection.
    pub fn direft() -> Self {
        Self {
            subtract_projection: false,
            ..Self::noreft()
        }
    }

    /// The preset of that name, if it is a ReFT preset.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "loreft" => Some(Self::loreft()),
            "noreft" => Some(Self::noreft()),
            "direft" => Some(Self::direft()),
            _ => None,
        }
    }

    /// Checks every field's domain.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::invalid("r", 0, "the rank must be at least 1"));
        }
        if self.prefix_positions + self.suffix_positions == 0 {
            return Err(Error::invalid(
                "prefix_positions",
                0,
                "with suffix_positions 0 there is no position to intervene on",
            ));
        }
        if !self.output_reft {
            return Err(Error::Unsupported(
                "output_reft = false (AdapterHub intervenes on layer outputs only)".into(),
            ));
        }
        super::values::check_probability("dropout", self.dropout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_serialise_as_adapterhubs() {
        let json = serde_json::to_value(ReftConfig::loreft()).unwrap();
        let expected = serde_json::json!({
            "architecture": "reft", "layers": "all", "prefix_positions": 3,
            "suffix_positions": 0, "r": 1, "orthogonality": true, "tied_weights": false,
            "dropout": 0.05, "non_linearity": null, "dtype": null, "output_reft": true,
            "init_weights_seed": null,
        });
        assert_eq!(json, expected);
        let direft = serde_json::to_value(ReftConfig::direft()).unwrap();
        assert_eq!(direft["subtract_projection"], false);
        let back = super::super::AdapterConfig::from_json(&direft).unwrap();
        assert_eq!(back, ReftConfig::direft().into());
    }
}
