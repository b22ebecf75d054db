//! `BnConfig`: the bottleneck adapter config, field for field AdapterHub's.

use serde::{Deserialize, Serialize};

use super::Activation;
use super::phm::{PhmRuleInit, PhmWeightInit};
use super::values::{InitWeights, ReductionFactor, ResidualBeforeLn, Scaling};
use crate::error::{Error, Result};

/// Configuration of a bottleneck adapter (AdapterHub's `BnConfig`).
///
/// Field names, JSON spelling and defaults are those of `adapters` 1.3.0, so a config written by
/// either library reads in the other. Start from a preset ([`BnConfig::seq_bn`],
/// [`BnConfig::double_seq_bn`], [`BnConfig::par_bn`], [`BnConfig::scaled_par_bn`]) and change
/// fields with struct update syntax or the config-string syntax of
/// [`AdapterConfig::load`](crate::AdapterConfig::load).
///
/// Compacter's PHM projections (`phm_layer`) share one rule across layers (`shared_phm_rule`,
/// the default) or hold their own, and likewise their weights (`shared_W_phm`). The
/// cross-attention fields are parsed and written back unchanged and reported as
/// [`Error::Unsupported`] when the adapter is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BnConfig {
    /// Add an adapter after the multi-head attention block (the attention-output site).
    pub mh_adapter: bool,
    /// Add an adapter after the feed-forward block (the output site).
    pub output_adapter: bool,
    /// Hidden size divided by this is the bottleneck width.
    pub reduction_factor: ReductionFactor,
    /// Non-linearity between the projections.
    pub non_linearity: Activation,
    /// Apply the sublayer's own residual + LayerNorm before the adapter.
    #[serde(default)]
    pub original_ln_before: bool,
    /// Apply the sublayer's own residual + LayerNorm after the adapter.
    #[serde(default = "yes")]
    pub original_ln_after: bool,
    /// Which tensor feeds the adapter's residual connection.
    #[serde(default = "residual_before")]
    pub residual_before_ln: ResidualBeforeLn,
    /// Add the adapter residual before the adapter's own output LayerNorm.
    #[serde(default)]
    pub adapter_residual_before_ln: bool,
    /// A new LayerNorm on the adapter input.
    #[serde(default)]
    pub ln_before: bool,
    /// A new LayerNorm on the adapter output.
    #[serde(default)]
    pub ln_after: bool,
    /// Weight initialisation scheme.
    #[serde(default = "init_bert")]
    pub init_weights: InitWeights,
    /// Seed for the initialisation; every site then starts from the same weights.
    #[serde(default)]
    pub init_weights_seed: Option<u64>,
    /// Parallel adapter: reads the sublayer input instead of its output.
    #[serde(default)]
    pub is_parallel: bool,
    /// Output scaling: a constant, `"learned"` or `"channel"`.
    #[serde(default = "scaling_one")]
    pub scaling: Scaling,
    /// A learned gate `mean_seq(sigmoid(Linear(x)))` on the adapter output.
    #[serde(default)]
    pub use_gating: bool,
    /// An invertible adapter on the embeddings, inverted before the output embeddings of
    /// language-model heads (`seq_bn_inv`, `double_seq_bn_inv`).
    #[serde(default)]
    pub inv_adapter: Option<InvertibleBlock>,
    /// The invertible adapter's subnetworks are `d → d / this → d'` (each half of the
    /// embedding, `d`, floored); required with `inv_adapter`.
    #[serde(default)]
    pub inv_adapter_reduction_factor: Option<f64>,
    /// Adapter after cross-attention (decoders). Not supported yet.
    #[serde(default)]
    pub cross_adapter: bool,
    /// Layer indices that get no adapter.
    #[serde(default)]
    pub leave_out: Vec<usize>,
    /// Dropout on the adapter output.
    #[serde(default)]
    pub dropout: f64,
    /// Compacter (Mahabadi et al., 2021): both projections are parameterised hypercomplex
    /// multiplication layers, `x H + b` with `H = Σᵢ Cᵢ ⊗ Wᵢ` over `phm_dim` rule matrices `Cᵢ`
    /// (`[n, n]`) and weights `Wᵢ` (`[d_in / n, d_out / n]`).
    #[serde(default)]
    pub phm_layer: bool,
    /// `n`, the number of rule and weight matrices (default 4); it must divide the projections'
    /// widths.
    #[serde(default = "super::phm::phm_dim")]
    pub phm_dim: usize,
    /// Each `Wᵢ` as a product of `[d_in / n, phm_rank]` and `[phm_rank, d_out / n]` factors
    /// (default true).
    #[serde(default = "yes", rename = "factorized_phm_W")]
    pub factorized_phm_w: bool,
    /// One set of weights for every layer of the adapter (default false), for the down and the
    /// up projection; every layer must then have the same bottleneck width.
    #[serde(default, rename = "shared_W_phm")]
    pub shared_w_phm: bool,
    /// One rule for every layer of the adapter (default true, as AdapterHub's), drawn from
    /// N(0, `phm_init_range`) or U(−1, 1) (`phm_c_init`); false gives each layer its own.
    #[serde(default = "yes")]
    pub shared_phm_rule: bool,
    /// Each `Cᵢ` as the outer product of two vectors (default false).
    #[serde(default)]
    pub factorized_phm_rule: bool,
    /// How the rule starts (default normal).
    #[serde(default = "super::phm::phm_c_init")]
    pub phm_c_init: PhmRuleInit,
    /// Standard deviation of [`PhmWeightInit::Normal`] weights (and of a shared rule; default
    /// 1e-4).
    #[serde(default = "super::phm::phm_init_range")]
    pub phm_init_range: f64,
    /// Train the rule (default true); false keeps it at its initial values.
    #[serde(default = "yes")]
    pub learn_phm: bool,
    /// How the weights start (default glorot-uniform).
    #[serde(default = "super::phm::hypercomplex_nonlinearity")]
    pub hypercomplex_nonlinearity: PhmWeightInit,
    /// Rank of factorised weights (default 1).
    #[serde(default = "super::phm::phm_rank")]
    pub phm_rank: usize,
    /// A bias on each PHM projection (default true).
    #[serde(default = "yes")]
    pub phm_bias: bool,
    /// Row-wise stochastic depth on the adapter's up projection during training.
    #[serde(default)]
    pub stochastic_depth: f64,
}

/// The coupling block of an invertible adapter (AdapterHub's `inv_adapter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvertibleBlock {
    /// Additive coupling (Dinh et al., 2015): `y₁ = x₁ + F(x₂)`, `y₂ = x₂ + G(y₁)`.
    Nice,
    /// Affine coupling (Kingma & Dhariwal, 2018) with soft-clamped scales.
    Glow,
}

fn yes() -> bool {
    true
}
fn residual_before() -> ResidualBeforeLn {
    ResidualBeforeLn::Before
}
fn init_bert() -> InitWeights {
    InitWeights::Bert
}
fn scaling_one() -> Scaling {
    Scaling::Fixed(1.0)
}

impl BnConfig {
    /// The base config with the four required fields and every other field at its default.
    pub fn new(
        mh_adapter: bool,
        output_adapter: bool,
        reduction_factor: impl Into<ReductionFactor>,
        non_linearity: Activation,
    ) -> Self {
        Self {
            mh_adapter,
            output_adapter,
            reduction_factor: reduction_factor.into(),
            non_linearity,
            original_ln_before: false,
            original_ln_after: true,
            residual_before_ln: ResidualBeforeLn::Before,
            adapter_residual_before_ln: false,
            ln_before: false,
            ln_after: false,
            init_weights: InitWeights::Bert,
            init_weights_seed: None,
            is_parallel: false,
            scaling: Scaling::Fixed(1.0),
            use_gating: false,
            inv_adapter: None,
            inv_adapter_reduction_factor: None,
            cross_adapter: false,
            leave_out: Vec::new(),
            dropout: 0.0,
            phm_layer: false,
            phm_dim: 4,
            factorized_phm_w: true,
            shared_w_phm: false,
            shared_phm_rule: true,
            factorized_phm_rule: false,
            phm_c_init: PhmRuleInit::Normal,
            phm_init_range: 1e-4,
            learn_phm: true,
            hypercomplex_nonlinearity: PhmWeightInit::GlorotUniform,
            phm_rank: 1,
            phm_bias: true,
            stochastic_depth: 0.0,
        }
    }

    /// `seq_bn` / `pfeiffer`: one adapter after the FFN, the original LayerNorm applied before it
    /// (Pfeiffer et al., 2020). relu, reduction factor 16.
    pub fn seq_bn() -> Self {
        Self {
            original_ln_before: true,
            ..Self::new(false, true, 16, Activation::Relu)
        }
    }

    /// `double_seq_bn` / `houlsby`: adapters after attention and after the FFN (Houlsby et al., 2019).
    /// swish, reduction factor 16.
    pub fn double_seq_bn() -> Self {
        Self::new(true, true, 16, Activation::Silu)
    }

    /// `seq_bn_inv` / `pfeiffer+inv`: [`BnConfig::seq_bn`] with a NICE invertible adapter on the
    /// embeddings (reduction factor 2), as in MAD-X (Pfeiffer et al., 2020).
    pub fn seq_bn_inv() -> Self {
        Self {
            inv_adapter: Some(InvertibleBlock::Nice),
            inv_adapter_reduction_factor: Some(2.0),
            ..Self::seq_bn()
        }
    }

    /// `double_seq_bn_inv` / `houlsby+inv`: [`BnConfig::double_seq_bn`] with a NICE invertible
    /// adapter on the embeddings (reduction factor 2).
    pub fn double_seq_bn_inv() -> Self {
        Self {
            inv_adapter: Some(InvertibleBlock::Nice),
            inv_adapter_reduction_factor: Some(2.0),
            ..Self::double_seq_bn()
        }
    }

    /// `par_bn` / `parallel`: a parallel adapter beside the FFN (He et al., 2021). relu, reduction
    /// factor 2, scaling 4, identity initialisation.
    pub fn par_bn() -> Self {
        Self {
            is_parallel: true,
            init_weights: InitWeights::MamAdapter,
            scaling: Scaling::Fixed(4.0),
            ..Self::new(false, true, 2, Activation::Relu)
        }
    }

    /// AdapterPlus (Steitz & Roth, 2024; AdapterHub's `AdapterPlusConfig`, which has no preset
    /// name): one adapter after the FFN with the original LayerNorm before it and not after,
    /// a learned scaling per channel, Houlsby's initialisation, stochastic depth 0.1, gelu,
    /// reduction factor 96.
    pub fn adapter_plus() -> Self {
        Self {
            original_ln_before: true,
            original_ln_after: false,
            residual_before_ln: ResidualBeforeLn::After,
            stochastic_depth: 0.1,
            init_weights: InitWeights::Houlsby,
            scaling: Scaling::Channel,
            ..Self::new(false, true, 96, Activation::Gelu)
        }
    }

    /// `scaled_par_bn`: [`BnConfig::par_bn`] with a learned scalar scaling.
    pub fn scaled_par_bn() -> Self {
        Self {
            scaling: Scaling::Learned,
            ..Self::par_bn()
        }
    }

    /// The preset of that name (AdapterHub names and aliases), if it is a bottleneck preset.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "seq_bn" | "pfeiffer" => Self::seq_bn(),
            "double_seq_bn" | "houlsby" => Self::double_seq_bn(),
            "par_bn" | "parallel" => Self::par_bn(),
            "scaled_par_bn" => Self::scaled_par_bn(),
            "seq_bn_inv" | "pfeiffer+inv" => Self::seq_bn_inv(),
            "double_seq_bn_inv" | "houlsby+inv" => Self::double_seq_bn_inv(),
            "compacter" => Self::compacter(),
            "compacter++" => Self::compacter_plus_plus(),
            _ => return None,
        })
    }

    /// Checks every field's domain and reports features that are parsed but not implemented.
    pub fn validate(&self) -> Result<()> {
        self.reduction_factor.validate()?;
        super::values::check_probability("dropout", self.dropout)?;
        super::values::check_probability("stochastic_depth", self.stochastic_depth)?;
        if let Scaling::Fixed(s) = self.scaling
            && !s.is_finite()
        {
            return Err(Error::invalid(
                "scaling",
                s,
                "must be finite, \"learned\" or \"channel\"",
            ));
        }
        if self.residual_before_ln == ResidualBeforeLn::PostAdd
            && !self.original_ln_before
            && !self.is_parallel
        {
            // AdapterHub accepts this and then fails in the forward pass (UnboundLocalError).
            return Err(Error::invalid(
                "residual_before_ln",
                "\"post_add\"",
                "\"post_add\" takes the residual after the original residual addition, so it needs original_ln_before = true",
            ));
        }
        if !self.mh_adapter && !self.output_adapter {
            return Err(Error::invalid(
                "mh_adapter/output_adapter",
                "false/false",
                "the adapter must be placed at one site at least",
            ));
        }
        self.validate_phm()?;
        if self.inv_adapter.is_some() {
            match self.inv_adapter_reduction_factor {
                Some(factor) if factor.is_finite() && factor > 0.0 => {}
                other => {
                    return Err(Error::invalid(
                        "inv_adapter_reduction_factor",
                        format!("{other:?}"),
                        "an invertible adapter needs a positive, finite reduction factor",
                    ));
                }
            }
        }
        if self.cross_adapter {
            return Err(Error::Unsupported(
                "cross_adapter = true (no cross-attention in encoder hosts)".into(),
            ));
        }
        Ok(())
    }
}
