//! Trainability by site identity: which parameters train is decided by which site, adapter,
//! fusion layer or head holds them, never by their paths.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

use super::AdapterHost;
use super::build::device_of;
use super::registry::Trainability;
use crate::error::{Error, Result};

/// Sets `require_grad` on every float parameter.
struct SetTrainable(bool);

impl ModuleMapper for SetTrainable {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // A parameter not yet initialised shares its lazy initialiser, and with it the
        // gradient requirement, with every clone of the model: setting it here would reach
        // them all. Initialising it first (once, for every clone) keeps the setting local.
        let _ = param.val();
        param.set_require_grad(self.0)
    }
}

/// `module` with every float parameter requiring gradients (`true`) or none.
pub(crate) fn trainable<M: Module>(module: M, trainable: bool) -> M {
    module.map(&mut SetTrainable(trainable))
}

/// Makes exactly what `plan` names trainable: the whole model when `plan.base`, else only the
/// named adapters (at every site), fusion layers and heads. Records the plan in the registry.
pub(crate) fn apply<M: AdapterHost>(model: &mut M, plan: Trainability) {
    // Module maps consume the module; parameters are reference-counted, so the clone is shallow.
    *model = trainable(model.clone(), plan.base);
    if !plan.base {
        let named = |name: &String| plan.adapters.contains(name);
        for site in model.residual_sites_mut() {
            site.map_modules(
                |name, adapter| trainable(adapter, named(name)),
                |key, fusion| trainable(fusion, plan.fusions.contains(key)),
            );
        }
        if let Some(shared) = model.shared_parameters_mut() {
            shared.map_phm(|name, phm| trainable(phm, named(name)));
        }
        for site in model.linear_sites_mut() {
            site.map_loras(|name, lora| trainable(lora, named(name)));
            // Shared MTL-LoRA factors train with any adapter that shares them.
            site.map_shared(|members, shared| {
                let training = members.iter().any(|m| plan.adapters.iter().any(|a| a == m));
                trainable(shared, training)
            });
        }
        for site in model.attention_sites_mut() {
            site.map_gates(|name, gate| trainable(gate, named(name)));
        }
        if let Some(pool) = model.prefix_pool_mut() {
            pool.map_prefixes(|name, prefix| trainable(prefix, named(name)));
        }
        if let Some(site) = model.embedding_site_mut() {
            site.map_prompts(|name, prompt| trainable(prompt, named(name)));
            site.map_invertibles(|name, invertible| trainable(invertible, named(name)));
        }
        for site in model.hidden_sites_mut() {
            site.map_refts(|name, reft| trainable(reft, named(name)));
        }
        if let Some(heads) = model.heads_mut() {
            let all = std::mem::take(heads);
            *heads = all.map_entries(|name, head| trainable(head, plan.heads.contains(name)));
        }
    }
    // VeRA's shared random matrices never train, nor a PHM rule with `learn_phm` false, not even
    // with the whole model.
    for site in model.linear_sites_mut() {
        site.map_loras(|_, lora| lora.with_frozen_projections());
    }
    for site in model.residual_sites_mut() {
        site.map_modules(
            |_, adapter| adapter.with_fixed_parameters(),
            |_, fusion| fusion,
        );
    }
    if let Some(shared) = model.shared_parameters_mut() {
        shared.map_phm(|_, phm| phm.with_fixed_rule());
    }
    model.registry_mut().trainable = plan;
}

/// Fails unless the model's device records gradients: training on it would panic in burn's
/// `backward`.
pub(crate) fn check_trainable<M: AdapterHost>(model: &M) -> Result<()> {
    match device_of(model)?.is_autodiff() {
        true => Ok(()),
        false => Err(Error::NoAutodiff),
    }
}
