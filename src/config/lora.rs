//! `LoRAConfig`: AdapterHub's config of LoRA and IA3 (architecture `"lora"`).

use serde::{Deserialize, Serialize};

use super::LinearPosition;
use crate::error::{Error, Result};

pub use super::lora_init::LoRAInit;

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

/// One of the attention projections LoRA can wrap (`attn_matrices` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttnMatrix {
    /// The query projection, `"q"`.
    #[serde(rename = "q")]
    Q,
    /// The key projection, `"k"`.
    #[serde(rename = "k")]
    K,
    /// The value projection, `"v"`.
    #[serde(rename = "v")]
    V,
    /// The attention output projection, `"o"` (Llama's `o_proj`, GPT-2's `attn.c_proj`). An
    /// extension: AdapterHub 1.3.0 wraps only q, k and v, so adapters with it save in PEFT's
    /// format only.
    #[serde(rename = "o")]
    O,
}

/// Configuration of LoRA / IA3 adapters (AdapterHub's `LoRAConfig`), field for field.
///
/// Its JSON form carries `"architecture": "lora"` as AdapterHub's does; the key is written on
/// serialisation and read by [`AdapterConfig::from_json`](super::AdapterConfig::from_json), which
/// chooses the config type by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "architecture",
    rename = "lora",
    deny_unknown_fields,
    default = "LoRAConfig::lora"
)]
pub struct LoRAConfig {
    /// Wrap the self-attention projections named in `attn_matrices`.
    pub selfattn_lora: bool,
    /// Wrap the first FFN projection (`intermediate.dense`).
    pub intermediate_lora: bool,
    /// Wrap the second FFN projection (`output.dense`).
    pub output_lora: bool,
    /// Wrap the gate projection of a gated feed-forward block (Llama's `gate_proj`). An
    /// extension AdapterHub 1.3.0 lacks: written only when set, and adapters with it save in
    /// PEFT's format only.
    #[serde(skip_serializing_if = "is_false")]
    pub gate_lora: bool,
    /// Layer indices that get no LoRA.
    pub leave_out: Vec<usize>,
    /// Rank of the update.
    pub r: usize,
    /// Scaling numerator: the update is scaled by `alpha / r` (`alpha` for IA3).
    #[serde(serialize_with = "python_number")]
    pub alpha: f64,
    /// Dropout on the LoRA input.
    pub dropout: f64,
    /// Which attention projections to wrap (with `selfattn_lora`).
    pub attn_matrices: Vec<AttnMatrix>,
    /// LoRA (`add`) or IA3 (`scale`).
    pub composition_mode: CompositionMode,
    /// Initialisation scheme.
    pub init_weights: LoRAInit,
    /// Seed of the initialisation.
    pub init_weights_seed: Option<u64>,
    /// A learned gate on the update.
    pub use_gating: bool,
    /// Weight-decomposed LoRA (DoRA, Liu et al., 2024): the adapted weight `W + ΔW` is split into
    /// a learned magnitude per output and its direction, `m ⊙ (W + ΔW) / ‖W + ΔW‖`, with the
    /// norm taken per output unit and treated as a constant in the backward pass (PEFT's DoRA;
    /// see the guide for where AdapterHub's differs). With VeRA this is DVoRA. Not with IA3, a
    /// gate or MTL-LoRA.
    pub use_dora: bool,
    /// rsLoRA (Kalajdzievski, 2023): scale the update by `alpha / √r` instead of `alpha / r`
    /// (PEFT's `use_rslora`). An extension AdapterHub 1.3.0 lacks: written only when set, and
    /// AdapterHub's files carry it folded into `alpha` (`alpha·√r / r = alpha / √r`).
    #[serde(skip_serializing_if = "is_false")]
    pub use_rslora: bool,
    /// IA3 on the projections back to the hidden width (the attention output `"o"` and the FFN's
    /// down projection) scales their input, `y = W (x ⊙ l) + b` with `l` `[1, d_input]`,
    /// instead of their output: the paper's `l_ff` and PEFT's `feedforward_modules`. An
    /// extension AdapterHub 1.3.0 lacks: written only when set; such adapters save in PEFT's
    /// format only.
    #[serde(skip_serializing_if = "is_false")]
    pub ia3_input_scaling: bool,
    /// VeRA (Kopiczko et al., 2024): with `vera_d` and `vera_b` set, `A` and `B` are frozen random
    /// matrices shared by every module of the adapter, and the update is
    /// `dropout(x) A diag(d) B diag(b) · alpha / r` with the vectors `d` (`[r]`, starting at
    /// `vera_d`) and `b` (`[d_output]`, starting at `vera_b`) trained. AdapterHub's `VeraConfig`
    /// draws the matrices as `init_weights` says (`"vera"`: kaiming-uniform).
    pub vera_d: Option<f64>,
    /// VeRA's initial `b` (see [`LoRAConfig::vera_d`]).
    pub vera_b: Option<f64>,
    /// Data type of the LoRA weights (`None`: the model's).
    pub dtype: Option<String>,
    /// MTL-LoRA's multi-task factors (AdapterHub's `MTLLoRAConfig`, architecture `"mtl_lora"`);
    /// `None` for LoRA and IA3. Read and written by
    /// [`AdapterConfig`](super::AdapterConfig)'s JSON form, beside the LoRA fields.
    #[serde(skip)]
    pub multi_task: Option<MultiTaskLoRA>,
}

/// The fields MTL-LoRA (Yang et al., 2024) adds to LoRA: `n_up_projection` up projections
/// `B₁..Bₙ` mixed by learned weights, and a task-specific `r × r` matrix between `A` and them:
/// `Δ = dropout(x) A Λ Σₖ softmax(w / sharpness)ₖ Bₖ · alpha / r`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiTaskLoRA {
    /// Number of up projections.
    pub n_up_projection: usize,
    /// The form of the task-specific matrix `Λ`.
    pub task_specific_matrix_type: TaskSpecificMatrix,
    /// Temperature of the up projections' mixing weights.
    #[serde(serialize_with = "python_number")]
    pub weights_sharpness: f64,
}

impl Default for MultiTaskLoRA {
    /// AdapterHub's defaults: one up projection, singular values, sharpness 0.05.
    fn default() -> Self {
        Self {
            n_up_projection: 1,
            task_specific_matrix_type: TaskSpecificMatrix::SingularValues,
            weights_sharpness: 0.05,
        }
    }
}

/// MTL-LoRA's task-specific matrix `Λ` (`task_specific_matrix_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSpecificMatrix {
    /// A diagonal, `r` values starting at 1.
    #[default]
    SingularValues,
    /// A full `r × r` matrix starting at all ones.
    Linear,
}

impl MultiTaskLoRA {
    /// The JSON keys of these fields (the rest of an `mtl_lora` config is a `LoRAConfig`).
    pub(crate) const KEYS: [&'static str; 3] = [
        "n_up_projection",
        "task_specific_matrix_type",
        "weights_sharpness",
    ];

    fn validate(&self) -> Result<()> {
        if self.n_up_projection == 0 {
            return Err(Error::invalid(
                "n_up_projection",
                0,
                "MTL-LoRA needs at least one up projection",
            ));
        }
        if !(self.weights_sharpness.is_finite() && self.weights_sharpness > 0.0) {
            return Err(Error::invalid(
                "weights_sharpness",
                self.weights_sharpness,
                "the mixing weights are divided by it: a positive, finite number",
            ));
        }
        Ok(())
    }
}

impl LoRAConfig {
    /// The `lora` preset: rank 8, alpha 8, query and value projections.
    pub fn lora() -> Self {
        Self {
            selfattn_lora: true,
            intermediate_lora: false,
            output_lora: false,
            gate_lora: false,
            leave_out: Vec::new(),
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            attn_matrices: vec![AttnMatrix::Q, AttnMatrix::V],
            composition_mode: CompositionMode::Add,
            init_weights: LoRAInit::Lora,
            init_weights_seed: None,
            use_gating: false,
            use_dora: false,
            use_rslora: false,
            ia3_input_scaling: false,
            vera_d: None,
            vera_b: None,
            dtype: None,
            multi_task: None,
        }
    }

    /// The `mtl_lora` preset: [`LoRAConfig::lora`] with AdapterHub's MTL-LoRA defaults.
    pub fn mtl_lora() -> Self {
        Self {
            multi_task: Some(MultiTaskLoRA::default()),
            ..Self::lora()
        }
    }

    /// The `ia3` preset: scaling vectors on keys, values and the first FFN projection.
    pub fn ia3() -> Self {
        Self {
            intermediate_lora: true,
            r: 1,
            alpha: 1.0,
            attn_matrices: vec![AttnMatrix::K, AttnMatrix::V],
            composition_mode: CompositionMode::Scale,
            init_weights: LoRAInit::Ia3,
            ..Self::lora()
        }
    }

    /// The `dora` preset: [`LoRAConfig::lora`] with weight decomposition (`use_dora`).
    pub fn dora() -> Self {
        Self {
            use_dora: true,
            ..Self::lora()
        }
    }

    /// The `vera` preset (AdapterHub's `VeraConfig`): rank 8, `d` starting at 0.1, `b` at 0, the
    /// shared matrices kaiming-uniform.
    pub fn vera() -> Self {
        Self {
            vera_d: Some(0.1),
            vera_b: Some(0.0),
            init_weights: LoRAInit::Vera,
            ..Self::lora()
        }
    }

    /// The `dvora` preset (AdapterHub's `DvoRAConfig`): [`LoRAConfig::vera`] with DoRA's
    /// magnitude.
    pub fn dvora() -> Self {
        Self {
            use_dora: true,
            ..Self::vera()
        }
    }

    /// Whether this is a VeRA config (`vera_d` or `vera_b` set).
    pub fn is_vera(&self) -> bool {
        self.vera_d.is_some() || self.vera_b.is_some()
    }

    /// The factor the update is scaled by: `alpha / r`, `alpha / √r` with rsLoRA, `alpha` for
    /// IA3.
    pub fn scaling(&self) -> f64 {
        match (self.composition_mode, self.use_rslora) {
            (CompositionMode::Scale, _) => self.alpha,
            (CompositionMode::Add, false) => self.alpha / self.r as f64,
            (CompositionMode::Add, true) => self.alpha / (self.r as f64).sqrt(),
        }
    }

    /// Whether the module at `position` scales its input (see [`LoRAConfig::ia3_input_scaling`]),
    /// on a host whose feed-forward projection back to the hidden width is at `ffn_down`.
    pub fn scales_input_at(&self, position: LinearPosition, ffn_down: LinearPosition) -> bool {
        self.ia3_input_scaling
            && (position == LinearPosition::AttentionOutput || position == ffn_down)
    }

    /// The config an adapter is saved with: PiSSA and OLoRA are written as the plain LoRA of
    /// twice the rank that applies to the original weights (PEFT's conversion, see
    /// [`LoRAInit::Pissa`]), with the same scaling; other configs as they are.
    pub(crate) fn as_saved(&self) -> Self {
        if !self.init_weights.changes_base() {
            return self.clone();
        }
        let r = 2 * self.r;
        let alpha = match self.use_rslora {
            true => self.alpha * std::f64::consts::SQRT_2,
            false => 2.0 * self.alpha,
        };
        Self {
            r,
            alpha,
            init_weights: LoRAInit::Lora,
            ..self.clone()
        }
    }

    /// The preset of that name, if it is a LoRA-family preset.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "lora" => Some(Self::lora()),
            "dora" => Some(Self::dora()),
            "vera" => Some(Self::vera()),
            "dvora" => Some(Self::dvora()),
            "ia3" => Some(Self::ia3()),
            "mtl_lora" => Some(Self::mtl_lora()),
            _ => None,
        }
    }

    /// Checks every field's domain.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::invalid("r", 0, "the rank must be at least 1"));
        }
        if !self.alpha.is_finite() {
            return Err(Error::invalid("alpha", self.alpha, "must be finite"));
        }
        super::values::check_probability("dropout", self.dropout)?;
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
            if !matches!(
                self.init_weights,
                LoRAInit::Ia3 | LoRAInit::Lora | LoRAInit::Bert
            ) {
                // AdapterHub's IA3 raises "Unknown init_weights type" for the others.
                return Err(Error::invalid(
                    "init_weights",
                    format!("\"{}\"", self.init_weights),
                    "composition_mode \"scale\" (IA3) starts from \"ia3\", \"lora\" or \"bert\"",
                ));
            }
        }
        if self.ia3_input_scaling && self.composition_mode != CompositionMode::Scale {
            return Err(Error::invalid(
                "ia3_input_scaling",
                true,
                "scales the input of IA3's vectors (composition_mode \"scale\")",
            ));
        }
        if let Some(multi_task) = &self.multi_task {
            multi_task.validate()?;
            if self.composition_mode != CompositionMode::Add {
                // AdapterHub builds a plain IA3 module then, ignoring the MTL fields.
                return Err(Error::invalid(
                    "composition_mode",
                    "\"scale\"",
                    "MTL-LoRA adds its update (composition_mode \"add\")",
                ));
            }
        }
        if self.use_dora {
            self.validate_dora()?;
        }
        if self.use_rslora && self.composition_mode == CompositionMode::Scale {
            return Err(Error::invalid(
                "use_rslora",
                true,
                "rsLoRA rescales a low-rank update; IA3 (composition_mode \"scale\") has none",
            ));
        }
        if self.is_vera() {
            self.validate_vera()?;
        }
        if self.init_weights.changes_base() {
            self.validate_base_changing_init()?;
        }
        Ok(())
    }
}

impl LoRAConfig {
    /// VeRA needs both initial values, finite, and an added update (AdapterHub fails on a
    /// missing one when it builds the module, and refuses IA3).
    fn validate_vera(&self) -> Result<()> {
        if !matches!(
            self.init_weights,
            LoRAInit::Vera | LoRAInit::Lora | LoRAInit::Bert | LoRAInit::Ia3
        ) {
            return Err(Error::invalid(
                "init_weights",
                format!("\"{}\"", self.init_weights),
                "VeRA's shared matrices start from \"vera\", \"lora\", \"bert\" or \"ia3\"",
            ));
        }
        for (field, value) in [("vera_d", self.vera_d), ("vera_b", self.vera_b)] {
            match value {
                None => {
                    return Err(Error::invalid(
                        field,
                        "null",
                        "VeRA needs both vera_d and vera_b",
                    ));
                }
                Some(v) if !v.is_finite() => {
                    return Err(Error::invalid(field, v, "must be finite"));
                }
                Some(_) => {}
            }
        }
        if self.composition_mode == CompositionMode::Scale {
            return Err(Error::invalid(
                "composition_mode",
                "\"scale\"",
                "VeRA (vera_d, vera_b) adds its update (composition_mode \"add\")",
            ));
        }
        if self.multi_task.is_some() {
            return Err(Error::invalid(
                "architecture",
                "\"mtl_lora\"",
                "VeRA (vera_d, vera_b) is not defined for MTL-LoRA",
            ));
        }
        Ok(())
    }

    /// PiSSA and OLoRA start from the wrapped weight and subtract their start from it: only for a
    /// plain added update, and PiSSA divides the singular values by a positive scaling.
    fn validate_base_changing_init(&self) -> Result<()> {
        let init = format!("\"{}\"", self.init_weights);
        let refuse = |reason: &str| {
            Err(Error::invalid(
                "init_weights",
                &init,
                format!("{init} moves part of the wrapped weight into the adapter: {reason}"),
            ))
        };
        if self.use_gating {
            return refuse("a gate on the update would change the output at the start");
        }
        if self.multi_task.is_some() {
            return refuse("not defined for MTL-LoRA's mixed up projections");
        }
        if self.init_weights != LoRAInit::Olora && self.alpha <= 0.0 {
            return Err(Error::invalid(
                "alpha",
                self.alpha,
                format!("{init} divides the singular values by the scaling: it must be positive"),
            ));
        }
        Ok(())
    }

    /// The combinations DoRA is defined for (AdapterHub asserts the same, or fails later).
    fn validate_dora(&self) -> Result<()> {
        let refuse = |field: &str, value: &str, reason: &str| {
            Err(Error::invalid(
                field,
                value,
                format!("DoRA (use_dora): {reason}"),
            ))
        };
        if self.composition_mode == CompositionMode::Scale {
            return refuse(
                "composition_mode",
                "\"scale\"",
                "decomposes an added low-rank update; IA3 has none",
            );
        }
        if self.use_gating {
            return refuse(
                "use_gating",
                "true",
                "the magnitude rescales the whole adapted weight, which a gate on the update \
                 alone cannot follow (and a gated update cannot be merged)",
            );
        }
        if self.multi_task.is_some() {
            return refuse("architecture", "\"mtl_lora\"", "not defined for MTL-LoRA");
        }
        Ok(())
    }
}

fn is_false(value: &bool) -> bool {
    !value
}
