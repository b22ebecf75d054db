//! Compacter's parameterised hypercomplex multiplication (PHM) layer (Mahabadi et al., 2021,
//! AdapterHub's `PHMLayer`): a linear map `x H + b` whose weight is a sum of Kronecker products,
//! `H = Σᵢ Cᵢ ⊗ Wᵢ`, of `n` small rule matrices `Cᵢ` (`[n, n]`) and weights `Wᵢ`
//! (`[d_in / n, d_out / n]`): about `d_in·d_out / n` parameters instead of `d_in·d_out`.

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};

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

/// A PHM projection `d_in → d_out` (`phm_dim` = `n`).
#[derive(Module, Debug)]
pub struct PhmLinear {
    /// The rule matrices `C`, `[n, n, n]`.
    pub rule: PhmMatrices,
    /// The weights `W`, `[n, d_in / n, d_out / n]`.
    pub weight: PhmMatrices,
    /// `b`, `[d_out]` (`phm_bias`).
    pub bias: Option<Param<Tensor<1>>>,
    /// Whether the rule trains (`learn_phm`).
    #[module(skip)]
    pub learn_rule: bool,
}

impl PhmLinear {
    /// A projection `d_in → d_out` initialised as `config` says: the rule from N(0, 0.01) or
    /// U(±0.01) (`phm_c_init`, AdapterHub's per-layer rule), each weight matrix or factor as
    /// `hypercomplex_nonlinearity` says on its own fans, the bias at zero.
    pub(crate) fn new(
        config: &BnConfig,
        [d_in, d_out]: [usize; 2],
        rng: &mut InitRng,
        device: &Device,
    ) -> Self {
        let n = config.phm_dim;
        let rule = |rng: &mut InitRng, shape: [usize; 3]| {
            let count = shape.iter().product();
            let values = match config.phm_c_init {
                PhmRuleInit::Normal => rng.normal(count, 0.0, 0.01),
                PhmRuleInit::Uniform => rng.uniform(count, 0.01),
            };
            // A rule that does not learn never requires gradients (`Module::train` keeps that).
            param(values, shape, device).set_require_grad(config.learn_phm)
        };
        let rule = match config.factorized_phm_rule {
            false => PhmMatrices::Full(rule(rng, [n, n, n])),
            true => PhmMatrices::Factorized(PhmFactors {
                left: rule(rng, [n, n, 1]),
                right: rule(rng, [n, 1, n]),
            }),
        };
        let weight = |rng: &mut InitRng, shape: [usize; 3]| {
            param(weight_values(config, shape, rng), shape, device)
        };
        let [rows, cols] = [d_in / n, d_out / n];
        let weight = match config.factorized_phm_w {
            false => PhmMatrices::Full(weight(rng, [n, rows, cols])),
            true => PhmMatrices::Factorized(PhmFactors {
                left: weight(rng, [n, rows, config.phm_rank]),
                right: weight(rng, [n, config.phm_rank, cols]),
            }),
        };
        Self {
            rule,
            weight,
            bias: config
                .phm_bias
                .then(|| param(vec![0.0; d_out], [d_out], device)),
            learn_rule: config.learn_phm,
        }
    }

    /// `H = Σᵢ Cᵢ ⊗ Wᵢ`, `[d_in, d_out]`.
    pub fn weight_matrix(&self) -> Tensor<2> {
        let rule = self.rule.value();
        let weight = self.weight.value();
        let [n, rows, cols] = weight.dims();
        // (Cᵢ ⊗ Wᵢ)[a·rows + c, b·cols + d] = Cᵢ[a, b] · Wᵢ[c, d]
        let rule: Tensor<5> = rule.reshape([n, n, 1, n, 1]);
        let weight: Tensor<5> = weight.reshape([n, 1, rows, 1, cols]);
        (rule * weight).sum_dim(0).reshape([n * rows, n * cols])
    }

    /// `x H + b`.
    ///
    /// # Shapes
    ///
    /// - x: `[..., d_in]`, output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight_matrix(), self.bias.as_ref().map(Param::val))
    }

    /// The layer with its rule frozen again when `learn_phm` is false, after a trainability
    /// mapping set every parameter.
    pub(crate) fn with_fixed_rule(self) -> Self {
        if self.learn_rule {
            return self;
        }
        let freeze = |p: Param<Tensor<3>>| p.set_require_grad(false);
        let rule = match self.rule {
            PhmMatrices::Full(m) => PhmMatrices::Full(freeze(m)),
            PhmMatrices::Factorized(f) => PhmMatrices::Factorized(PhmFactors {
                left: freeze(f.left),
                right: freeze(f.right),
            }),
        };
        Self { rule, ..self }
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
        let layer = PhmLinear::new(&config, [6, 4], &mut InitRng::seeded(3), &device);
        let values = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (c, w) = (values(layer.rule.value()), values(layer.weight.value()));
        let h = layer.weight_matrix();
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
