//! `FusionConfig`: AdapterHub's `AdapterFusionConfig` (presets `static` and `dynamic`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How an AdapterFusion layer attends over its adapters' outputs, field for field as
/// AdapterHub's `AdapterFusionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// A key projection of the adapter outputs.
    pub key: bool,
    /// A query projection of the layer's hidden states.
    pub query: bool,
    /// A value projection (without bias) of the adapter outputs.
    pub value: bool,
    /// Take the query before the sublayer's LayerNorm.
    pub query_before_ln: bool,
    /// Whether training adds the value regularisation `0.01·‖I − W_v‖²`.
    pub regularization: bool,
    /// Add the residual to the values before attention instead of to the output.
    pub residual_before: bool,
    /// Anneal a softmax temperature from 50 to 1 during training. Not supported.
    pub temperature: bool,
    /// Project the values before (`true`) or after the attention average.
    pub value_before_softmax: bool,
    /// Start the value projection at the identity (off-diagonal 1e-6).
    pub value_initialized: bool,
    /// Dropout on the attention scores (`None`: the model's attention dropout).
    pub dropout_prob: Option<f64>,
}

impl FusionConfig {
    /// `static`: query and key projections, no value projection, no regularisation.
    pub fn static_fusion() -> Self {
        Self {
            key: true,
            query: true,
            value: false,
            query_before_ln: false,
            regularization: false,
            residual_before: false,
            temperature: false,
            value_before_softmax: true,
            value_initialized: false,
            dropout_prob: None,
        }
    }

    /// `dynamic`: adds an identity-initialised value projection and its regularisation.
    pub fn dynamic_fusion() -> Self {
        Self {
            value: true,
            regularization: true,
            value_initialized: true,
            ..Self::static_fusion()
        }
    }

    /// A preset name (`"static"`, `"dynamic"`) or a JSON object.
    pub fn load(spec: &str) -> Result<Self> {
        let config = match spec.trim() {
            "static" => Self::static_fusion(),
            "dynamic" => Self::dynamic_fusion(),
            text if text.starts_with('{') => {
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                    .map_err(|e| {
                        Error::invalid(e.path().to_string(), text, e.into_inner().to_string())
                    })?
            }
            other => {
                return Err(Error::invalid(
                    "fusion config",
                    other,
                    "expected \"static\", \"dynamic\" or a JSON object",
                ));
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings this library can run.
    pub fn validate(&self) -> Result<()> {
        if self.temperature {
            return Err(Error::Unsupported(
                "AdapterFusion with `temperature: true` (an annealed, stateful softmax temperature)"
                    .into(),
            ));
        }
        if !(self.key || self.query || self.value) {
            return Err(Error::Unsupported(
                "AdapterFusion without query, key and value projections".into(),
            ));
        }
        if let Some(p) = self.dropout_prob {
            super::values::check_probability("dropout_prob", p)?;
        }
        Ok(())
    }
}
