//! Compacter's parameterised hypercomplex multiplication (PHM) layer (Mahabadi et al., 2021,
//! AdapterHub's `PHMLayer`): a linear map `x H + b` whose weight is a sum of Kronecker products,
//! `H = Σᵢ Cᵢ ⊗ Wᵢ`, of `n` small rule matrices `Cᵢ` (`[n, n]`) and weights `Wᵢ`
//! (`[d_in / n, d_out / n]`): about `d_in·d_out / n` parameters instead of `d_in·d_out`.
//!
//! The rule and the weights are a layer's own, or its adapter's [`SharedPhm`] that every layer
//! of the adapter reads (`shared_phm_rule`, AdapterHub's default, and `shared_W_phm`).

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};

use super::SharedPhm;
use super::init::{InitRng, param};
use crate::config::{BnConfig, PhmRuleInit, PhmWeightInit};

/// `n` matrices `[n, rows, cols]`, stored whole or as batched factors `left · right`.
#[derive(Module, Debug)]
pub enum PhmMatrices {
    /// The matrices themselves (AdapterHub's `phm_rule` / `W`).
    Full(Param<Tensor<3>>),
    /// `left` `[n, rows, k]` times `right` `[n, k, cols]` (`phm_rule_left` / `_right`,
    /// `W_left` / `W_right`).
    Factorized(PhmFactors),
}

/// The factors of [`PhmMatrices::Factorized`].
#[derive(Module, Debug)]
pub struct PhmFactors {
    /// `[n, rows, k]`.
    pub left: Param<Tensor<3>>,
    /// `[n, k, cols]`.
    pub right: Param<Tensor<3>>,
}

impl PhmMatrices {
    /// The `n` matrices, `[n, rows, cols]`.
    pub fn value(&self) -> Tensor<3> {
        match self {
            Self::Full(m) => m.val(),
            Self::Factorized(f) => f.left.val().matmul(f.right.val()),
        }
    }

    /// The matrices with gradients off, whatever a trainability mapping set.
    pub(crate) fn frozen(self) -> Self {
        let freeze = |p: Param<Tensor<3>>| p.set_require_grad(false);
        match self {
            Self::Full(m) => Self::Full(freeze(m)),
            Self::Factorized(f) => Self::Factorized(PhmFactors {
                left: freeze(f.left),
                right: freeze(f.right),
            }),
        }
    }

    /// `[n, rows, cols]`, without forming the matrices.
    pub fn dims(&self) -> [usize; 3] {
        match self {
            Self::Full(m) => m.shape().dims::<3>(),
            Self::Factorized(f) => {
                let [n, rows, _] = f.left.shape().dims::<3>();
                [n, rows, f.right.shape().dims::<3>()[2]]
            }
        }
    }
}

/// Which projection of a bottleneck a PHM layer is: what it reads from its adapter's shared
/// weights (`shared_W_phm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhmPosition {
    /// `hidden → bottleneck` (AdapterHub's `adapter_down`, `W_down`).
    Down,
    /// `bottleneck → hidden` (`adapter_up`, `W_up`).
    Up,
}

/// A PHM projection `d_in → d_out` (`phm_dim` = `n`).
#[derive(Module, Debug)]
pub struct PhmLinear {
    /// The layer's own rule matrices `C`, `[n, n, n]`; `None` when it reads its adapter's
    /// ([`SharedPhm::rule`], `shared_phm_rule`).
    pub rule: Option<PhmMatrices>,
    /// The layer's own weights `W`, `[n, d_in / n, d_out / n]`; `None` when it reads its
    /// adapter's ([`SharedPhm::weights`], `shared_W_phm`).
    pub weight: Option<PhmMatrices>,
    /// `b`, `[d_out]` (`phm_bias`).
    pub bias: Option<Param<Tensor<1>>>,
    /// Whether the rule trains (`learn_phm`).
    #[module(skip)]
    pub learn_rule: bool,
    /// Which projection of its bottleneck the layer is.
    #[module(skip)]
    pub position: PhmPosition,
    /// `[d_in, d_out]`.
    #[module(skip)]
    pub dims: [usize; 2],
}

impl PhmLinear {
    /// A projection `d_in → d_out` initialised as `config` says: its own rule (unless
    /// `shared_phm_rule`) from N(0, 0.01) or U(±0.01) (`phm_c_init`, AdapterHub's per-layer
    /// rule), its own weights (unless `shared_W_phm`) as [`phm_weights`] draws them, the bias at
    /// zero.
    pub(crate) fn new(
        config: &BnConfig,
        position: PhmPosition,
        [d_in, d_out]: [usize; 2],
        rng: &mut InitRng,
        device: &Device,
    ) -> Self {
        let rule = (!config.shared_phm_rule).then(|| phm_rule(config, 0.01, 0.01, rng, device));
        let weight =
            (!config.shared_w_phm).then(|| phm_weights(config, [d_in, d_out], rng, device));
        Self {
            rule,
            weight,
            bias: config
                .phm_bias
                .then(|| param(vec![0.0; d_out], [d_out], device)),
            learn_rule: config.learn_phm,
            position,
            dims: [d_in, d_out],
        }
    }

    /// `H = Σᵢ Cᵢ ⊗ Wᵢ`, `[d_in, d_out]`, with the layer's own rule and weights or else those of
    /// `shared`, its adapter's shared parameters.
    ///
    /// # Panics
    ///
    /// When the layer reads shared parameters and `shared` lacks them (the model's forward
    /// always passes its adapter's).
    pub fn weight_matrix(&self, shared: Option<&SharedPhm>) -> Tensor<2> {
        let missing = || panic!("a PHM layer reading shared parameters was run without them");
        let rule = match (&self.rule, shared.and_then(|s| s.rule.as_ref())) {
            (Some(own), _) | (None, Some(own)) => own.value(),
            (None, None) => missing(),
        };
        let weight = match (&self.weight, shared.and_then(|s| s.weights(self.position))) {
            (Some(own), _) | (None, Some(own)) => own.value(),
            (None, None) => missing(),
        };
        let [n, rows, cols] = weight.dims();
        // (Cᵢ ⊗ Wᵢ)[a·rows + c, b·cols + d] = Cᵢ[a, b] · Wᵢ[c, d]
        let rule: Tensor<5> = rule.reshape([n, n, 1, n, 1]);
        let weight: Tensor<5> = weight.reshape([n, 1, rows, 1, cols]);
        (rule * weight).sum_dim(0).reshape([n * rows, n * cols])
    }

    /// `x H + b` (see [`PhmLinear::weight_matrix`]).
    ///
    /// # Shapes
    ///
    /// - x: `[..., d_in]`, output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>, shared: Option<&SharedPhm>) -> Tensor<D> {
        linear(
            x,
            self.weight_matrix(shared),
            self.bias.as_ref().map(Param::val),
        )
    }

    /// The layer with its rule frozen again when `learn_phm` is false, after a trainability
    /// mapping set every parameter.
    pub(crate) fn with_fixed_rule(self) -> Self {
        Self {
            rule: fixed_rule(self.rule, self.learn_rule),
            ..self
        }
    }
}

/// `rule` frozen unless it learns (`learn_phm`).
pub(crate) fn fixed_rule(rule: Option<PhmMatrices>, learn: bool) -> Option<PhmMatrices> {
    match learn {
        true => rule,
        false => rule.map(PhmMatrices::frozen),
    }
}

/// Rule matrices `[n, n, n]` (or factors `[n, n, 1]`, `[n, 1, n]`) drawn from N(0, `std`) or
/// U(±`bound`) as `phm_c_init` says; a rule that does not learn never requires gradients
/// (`Module::train` keeps that).
pub(crate) fn phm_rule(
    config: &BnConfig,
    std: f64,
    bound: f64,
    rng: &mut InitRng,
    device: &Device,
) -> PhmMatrices {
    let n = config.phm_dim;
    let mut rule = |shape: [usize; 3]| {
        let count = shape.iter().product();
        let values = match config.phm_c_init {
            PhmRuleInit::Normal => rng.normal(count, 0.0, std),
            PhmRuleInit::Uniform => rng.uniform(count, bound),
        };
        param(values, shape, device).set_require_grad(config.learn_phm)
    };
    match config.factorized_phm_rule {
        false => PhmMatrices::Full(rule([n, n, n])),
        true => PhmMatrices::Factorized(PhmFactors {
            left: rule([n, n, 1]),
            right: rule([n, 1, n]),
        }),
    }
}

/// The weights of a projection `d_in → d_out`, `[n, d_in / n, d_out / n]` whole or as
/// rank-`phm_rank` factors (`factorized_phm_W`), each matrix or factor drawn as
/// `hypercomplex_nonlinearity` says on its own fans.
pub(crate) fn phm_weights(
    config: &BnConfig,
    [d_in, d_out]: [usize; 2],
    rng: &mut InitRng,
    device: &Device,
) -> PhmMatrices {
    let n = config.phm_dim;
    let mut weight = |shape: [usize; 3]| param(weight_values(config, shape, rng), shape, device);
    let [rows, cols] = [d_in / n, d_out / n];
    match config.factorized_phm_w {
        false => PhmMatrices::Full(weight([n, rows, cols])),
        true => PhmMatrices::Factorized(PhmFactors {
            left: weight([n, rows, config.phm_rank]),
            right: weight([n, config.phm_rank, cols]),
        }),
    }
}

/// One weight tensor `[n, rows, cols]`, each of its `n` matrices drawn on its own fans (torch's
/// `xavier_*_` on a `[rows, cols]` slice: fan_in `cols`, fan_out `rows`).
fn weight_values(config: &BnConfig, [n, rows, cols]: [usize; 3], rng: &mut InitRng) -> Vec<f32> {
    let count = n * rows * cols;
    let fans = (rows + cols) as f64;
    match config.hypercomplex_nonlinearity {
        PhmWeightInit::Phm | PhmWeightInit::GlorotNormal => {
            rng.normal(count, 0.0, (2.0 / fans).sqrt())
        }
        PhmWeightInit::GlorotUniform => rng.uniform(count, (6.0 / fans).sqrt()),
        PhmWeightInit::Normal => rng.normal(count, 0.0, config.phm_init_range),
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// `H` against the Kronecker products written out entry by entry.
    #[test]
    fn weight_matrix_is_the_sum_of_kronecker_products() {
        let device = Device::flex();
        let config = BnConfig {
            phm_layer: true,
            phm_dim: 2,
            phm_rank: 2,
            shared_phm_rule: false,
            hypercomplex_nonlinearity: PhmWeightInit::GlorotNormal,
            ..BnConfig::seq_bn()
        };
        let rng = &mut InitRng::seeded(3);
        let layer = PhmLinear::new(&config, PhmPosition::Down, [6, 4], rng, &device);
        let values = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let [rule, weight] =
            [&layer.rule, &layer.weight].map(|m| values(m.as_ref().unwrap().value()));
        let (c, w) = (rule, weight);
        let h = layer.weight_matrix(None);
        assert_eq!(h.dims(), [6, 4]);
        let h = h.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (n, rows, cols) = (2, 3, 2);
        for a in 0..n {
            for b in 0..n {
                for r in 0..rows {
                    for s in 0..cols {
                        let want: f32 = (0..n)
                            .map(|i| c[i * n * n + a * n + b] * w[i * rows * cols + r * cols + s])
                            .sum();
                        let got = h[(a * rows + r) * (n * cols) + b * cols + s];
                        assert!(
                            (got - want).abs() <= 1e-6,
                            "H[{a}·{rows}+{r}, {b}·{cols}+{s}]"
                        );
                    }
                }
            }
        }
    }
}
