//! The Compacter fields of [`BnConfig`] (`phm_layer` and its options): their value types,
//! defaults and checks.

use serde::{Deserialize, Serialize};

use super::{BnConfig, InitWeights};
use crate::error::{Error, Result};

/// How a PHM layer's rule matrices start (AdapterHub's `phm_c_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhmRuleInit {
    /// N(0, 0.01) for a layer's own rule.
    Normal,
    /// U(−0.01, 0.01) for a layer's own rule.
    Uniform,
}

/// How a PHM layer's weight matrices start (AdapterHub's `hypercomplex_nonlinearity`), each of the
/// `phm_dim` matrices (or factors) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhmWeightInit {
    /// Glorot normal, the original Compacter's `"phm"` option.
    #[serde(rename = "phm")]
    Phm,
    /// Glorot (Xavier) normal: N(0, 2 / (fan_in + fan_out)).
    #[serde(rename = "glorot-normal")]
    GlorotNormal,
    /// Glorot (Xavier) uniform: U(±√(6 / (fan_in + fan_out))).
    #[serde(rename = "glorot-uniform")]
    GlorotUniform,
    /// N(0, `phm_init_range`).
    #[serde(rename = "normal")]
    Normal,
}

pub(super) fn phm_dim() -> usize {
    4
}
pub(super) fn phm_c_init() -> PhmRuleInit {
    PhmRuleInit::Normal
}
pub(super) fn phm_init_range() -> f64 {
    1e-4
}
pub(super) fn hypercomplex_nonlinearity() -> PhmWeightInit {
    PhmWeightInit::GlorotUniform
}
pub(super) fn phm_rank() -> usize {
    1
}

impl BnConfig {
    /// `compacter++` (AdapterHub's `CompacterPlusPlusConfig`): [`BnConfig::seq_bn`] with PHM
    /// projections, reduction factor 32 and GELU.
    pub fn compacter_plus_plus() -> Self {
        Self {
            phm_layer: true,
            reduction_factor: 32.0.into(),
            non_linearity: super::Activation::Gelu,
            ..Self::seq_bn()
        }
    }

    /// `compacter` (AdapterHub's `CompacterConfig`): [`BnConfig::double_seq_bn`] with PHM
    /// projections, reduction factor 32 and GELU.
    pub fn compacter() -> Self {
        Self {
            phm_layer: true,
            reduction_factor: 32.0.into(),
            non_linearity: super::Activation::Gelu,
            ..Self::double_seq_bn()
        }
    }

    /// The PHM fields' domains, when `phm_layer` is set.
    pub(super) fn validate_phm(&self) -> Result<()> {
        if !self.phm_layer {
            return Ok(());
        }
        if self.phm_dim == 0 {
            return Err(Error::invalid("phm_dim", 0, "must be at least 1"));
        }
        if self.factorized_phm_w && self.phm_rank == 0 {
            return Err(Error::invalid("phm_rank", 0, "must be at least 1"));
        }
        if !(self.phm_init_range.is_finite() && self.phm_init_range >= 0.0) {
            return Err(Error::invalid(
                "phm_init_range",
                self.phm_init_range,
                "must be a finite standard deviation",
            ));
        }
        if self.init_weights != InitWeights::Bert {
            // AdapterHub initialises the projections' `.weight`, which a PHM layer lacks.
            return Err(Error::invalid(
                "init_weights",
                format!("{:?}", self.init_weights),
                "PHM layers start from their own initialisation (init_weights \"bert\")",
            ));
        }
        Ok(())
    }

    /// Checks that `phm_dim` divides the widths a PHM projection maps between.
    pub(crate) fn check_phm_widths(&self, widths: [usize; 2]) -> Result<()> {
        match widths.iter().find(|w| *w % self.phm_dim != 0) {
            Some(w) => Err(Error::invalid(
                "phm_dim",
                self.phm_dim,
                format!(
                    "must divide the projections' widths {widths:?}, and {w} is not a multiple"
                ),
            )),
            None => Ok(()),
        }
    }
}
