//! `LoRAConfig`: AdapterHub's config of LoRA and IA3 (architecture `"lora"`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn python_number<S: serde::Serializer>(
    value: &f64,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    super::values::serialize_python_number(*value, serializer)
}

/// How the low-rank update combines with the wrapped layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompositionMode {
    /// LoRA: `y = W x + b + B A x · alpha / r`.
    Add,
    /// IA3: `y = (W x + b) ⊙ (l · alpha)`.
    Scale,
}

/// Initialisation of the LoRA matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoRAInit {
    /// `A` kaiming-uniform, `B` zeros (the update starts at zero).
    Lora,
    /// `A` and `B` from N(0, 0.02).
    Bert,
    /// The IA3 vector starts at ones.
    Ia3,
    /// VeRA's shared random matrices.
    Vera,
}

/// Configuration of LoRA / IA3 adapters (AdapterHub's `LoRAConfig`), field for field.
///
/// Parsing, validation and JSON round trips are complete; building LoRA modules inside a model
/// needs linear sites, which are not implemented yet (`add_adapter` reports
/// [`Error::Unsupported`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default = "LoRAConfig::lora")]
pub struct LoRAConfig {
    /// Always `"lora"` (AdapterHub writes it).
    pub architecture: String,
    /// Wrap the self-attention projections named in `attn_matrices`.
    pub selfattn_lora: bool,
    /// Wrap the first FFN projection (`intermediate.dense`).
    pub intermediate_lora: bool,
    /// Wrap the second FFN projection (`output.dense`).
    pub output_lora: bool,
    /// Layer indices that get no LoRA.
    pub leave_out: Vec<usize>,
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator: the update is scaled by `alpha / r` (`alpha` for IA3).
    #[serde(serialize_with = "python_number")]
    pub alpha: f64,
    /// Dropout on the LoRA input.
    pub dropout: f64,
    /// Which of `q`, `k`, `v` to wrap.
    pub attn_matrices: Vec<String>,
    /// LoRA (`add`) or IA3 (`scale`).
    pub composition_mode: CompositionMode,
    /// Initialisation scheme.
    pub init_weights: LoRAInit,
    /// Seed of the initialisation.
    pub init_weights_seed: Option<u64>,
    /// A learned gate on the update.
    pub use_gating: bool,
    /// Weight-decomposed LoRA (DoRA). Not supported yet.
    pub use_dora: bool,
    /// VeRA's `d` initial value. Not supported yet.
    pub vera_d: Option<f64>,
    /// VeRA's `b` initial value. Not supported yet.
    pub vera_b: Option<f64>,
    /// Data type of the LoRA weights (`None`: the model's).
    pub dtype: Option<String>,
}

impl LoRAConfig {
    /// The `lora` preset: rank 8, alpha 8, query and value projections.
    pub fn lora() -> Self {
        Self {
            architecture: "lora".into(),
            selfattn_lora: true,
            intermediate_lora: false,
            output_lora: false,
            leave_out: Vec::new(),
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            attn_matrices: vec!["q".into(), "v".into()],
            composition_mode: CompositionMode::Add,
            init_weights: LoRAInit::Lora,
            init_weights_seed: None,
            use_gating: false,
            use_dora: false,
            vera_d: None,
            vera_b: None,
            dtype: None,
        }
    }

    /// The `ia3` preset: scaling vectors on keys, values and the first FFN projection.
    pub fn ia3() -> Self {
        Self {
            intermediate_lora: true,
            r: 1,
            alpha: 1.0,
            attn_matrices: vec!["k".into(), "v".into()],
            composition_mode: CompositionMode::Scale,
            init_weights: LoRAInit::Ia3,
            ..Self::lora()
        }
    }

    /// The preset of that name, if it is a LoRA-family preset.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "lora" => Some(Self::lora()),
            "ia3" => Some(Self::ia3()),
            _ => None,
        }
    }

    /// Checks every field's domain.
    pub fn validate(&self) -> Result<()> {
        if self.architecture != "lora" {
            return Err(Error::invalid(
                "architecture",
                &self.architecture,
                "a LoRAConfig has architecture \"lora\"",
            ));
        }
        if self.r == 0 {
            return Err(Error::invalid("r", 0, "the rank must be at least 1"));
        }
        if !self.alpha.is_finite() {
            return Err(Error::invalid("alpha", self.alpha, "must be finite"));
        }
        super::values::check_probability("dropout", self.dropout)?;
        if let Some(m) = self
            .attn_matrices
            .iter()
            .find(|m| !matches!(m.as_str(), "q" | "k" | "v"))
        {
            return Err(Error::invalid(
                "attn_matrices",
                m,
                "entries must be \"q\", \"k\" or \"v\"",
            ));
        }
        if self.composition_mode == CompositionMode::Scale {
            if self.r != 1 {
                return Err(Error::invalid(
                    "r",
                    self.r,
                    "composition_mode \"scale\" (IA3) needs r = 1",
                ));
            }
            if self.dropout > 0.0 {
                return Err(Error::invalid(
                    "dropout",
                    self.dropout,
                    "composition_mode \"scale\" (IA3) has no dropout",
                ));
            }
        }
        if self.use_dora {
            return Err(Error::Unsupported("use_dora = true (DoRA)".into()));
        }
        if self.init_weights == LoRAInit::Vera || self.vera_d.is_some() || self.vera_b.is_some() {
            return Err(Error::Unsupported("VeRA".into()));
        }
        Ok(())
    }
}
