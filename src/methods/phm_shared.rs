//! What the PHM layers of one Compacter share across layers (AdapterHub's
//! `shared_parameters.<name>`): the rule (`shared_phm_rule`, AdapterHub's default) and the
//! weights (`shared_W_phm`). The model holds them once
//! ([`SharedParameters`](crate::sites::SharedParameters)), so an optimizer step updates them once
//! for every layer.

use burn::module::Module;
use burn::tensor::Device;

use super::init::InitRng;
use super::phm::{PhmMatrices, PhmPosition, fixed_rule, phm_rule, phm_weights};
use crate::config::BnConfig;

/// The weights of both projections, shared by every layer of an adapter (`shared_W_phm`).
#[derive(Module, Debug)]
pub struct SharedPhmWeights {
    /// `[n, hidden / n, bottleneck / n]` (AdapterHub's `W_down`, or `W_down_left` / `_right`).
    pub down: PhmMatrices,
    /// `[n, bottleneck / n, hidden / n]` (`W_up`, or `W_up_left` / `_right`).
    pub up: PhmMatrices,
}

/// The parameters an adapter's PHM layers share across layers.
#[derive(Module, Debug)]
pub struct SharedPhm {
    /// The rule matrices `C`, `[n, n, n]` (`shared_phm_rule`).
    pub rule: Option<PhmMatrices>,
    /// The projections' weights (`shared_W_phm`).
    pub weights: Option<SharedPhmWeights>,
    /// Whether the rule trains (`learn_phm`).
    #[module(skip)]
    pub learn_rule: bool,
}

impl SharedPhm {
    /// What `config` shares for projections `hidden ↔ bottleneck`, drawn as AdapterHub draws
    /// shared parameters (the weights as a layer's own, the rule from N(0, `phm_init_range`)
    /// or U(−1, 1) by `phm_c_init`).
    pub(crate) fn new(
        config: &BnConfig,
        [hidden, bottleneck]: [usize; 2],
        rng: &mut InitRng,
        device: &Device,
    ) -> Self {
        let weights = config.shared_w_phm.then(|| SharedPhmWeights {
            down: phm_weights(config, [hidden, bottleneck], rng, device),
            up: phm_weights(config, [bottleneck, hidden], rng, device),
        });
        let rule = config
            .shared_phm_rule
            .then(|| phm_rule(config, config.phm_init_range, 1.0, rng, device));
        Self {
            rule,
            weights,
            learn_rule: config.learn_phm,
        }
    }

    /// The shared weights of the projection at `position`, if the weights are shared.
    pub fn weights(&self, position: PhmPosition) -> Option<&PhmMatrices> {
        let weights = self.weights.as_ref()?;
        Some(match position {
            PhmPosition::Down => &weights.down,
            PhmPosition::Up => &weights.up,
        })
    }

    /// The shared parameters with the rule frozen again when `learn_phm` is false, after a
    /// trainability mapping set every parameter.
    pub(crate) fn with_fixed_rule(self) -> Self {
        Self {
            rule: fixed_rule(self.rule, self.learn_rule),
            ..self
        }
    }
}
