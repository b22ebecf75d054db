//! Building an adapter's modules for every site of a host, and installing them.

use burn::module::Module;

use super::{AdapterHost, AdapterModel};
use crate::config::{AdapterConfig, BnConfig, LoRAConfig};
use crate::error::{Error, Result};
use crate::heads::PredictionHead;
use crate::methods::{Bottleneck, LoRA};

/// The modules of one adapter, built for each site of a host (in the visiting orders of
/// [`AdapterHost::visit_sites`] and [`AdapterHost::visit_linear_sites`]).
pub(crate) struct AdapterModules {
    pub residual: Vec<Option<Bottleneck>>,
    pub linear: Vec<Option<LoRA>>,
}

/// Builds the modules `config` places in `model`, without changing it. `seed` overrides the
/// configs' initialisation seeds (loading overwrites the values anyway).
pub(crate) fn build_modules<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    seed: Option<u64>,
) -> Result<AdapterModules> {
    let device = model.device()?;
    let hidden = model.hidden_size();
    if config.lora().is_some() {
        let mut sites = 0;
        model.visit_linear_sites(&mut |_| sites += 1);
        if sites == 0 {
            return Err(Error::Unsupported(
                "LoRA/IA3 on a host without linear sites (see `AdapterHost::visit_linear_sites`)"
                    .into(),
            ));
        }
    }
    let mut failure = None;
    let mut residual = Vec::new();
    model.visit_sites(&mut |site| {
        let built = match (site.placed(config), &failure) {
            (Some(bn), None) => {
                let bn = match seed {
                    Some(seed) => &BnConfig {
                        init_weights_seed: Some(seed),
                        ..bn.clone()
                    },
                    None => bn,
                };
                Bottleneck::new(bn, hidden, site.location().layer, &device)
                    .map_err(|e| failure = Some(e))
                    .ok()
            }
            _ => None,
        };
        residual.push(built);
    });
    let mut linear = Vec::new();
    model.visit_linear_sites(&mut |site| {
        let built = match (site.placed(config), &failure) {
            (Some(lora), None) => {
                let lora = match seed {
                    Some(seed) => &LoRAConfig {
                        init_weights_seed: Some(seed),
                        ..lora.clone()
                    },
                    None => lora,
                };
                let (d_input, d_output) = site.dims();
                LoRA::new(lora, d_input, d_output, &device)
                    .map_err(|e| failure = Some(e))
                    .ok()
            }
            _ => None,
        };
        linear.push(built);
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(AdapterModules { residual, linear }),
    }
}

/// Inserts an adapter's modules under `name`, and a head of the same name if given.
pub(crate) fn install<M: AdapterHost>(
    model: &mut M,
    name: &str,
    config: AdapterConfig,
    modules: AdapterModules,
    head: Option<PredictionHead>,
) {
    let autodiff = model.device().is_ok_and(|d| d.is_autodiff());
    let mut residual = modules.residual.into_iter();
    model.visit_sites_mut(&mut |site| {
        if let Some(Some(adapter)) = residual.next() {
            site.insert_adapter(name, match_autodiff(adapter, autodiff));
        }
    });
    let mut linear = modules.linear.into_iter();
    model.visit_linear_sites_mut(&mut |site| {
        if let Some(Some(lora)) = linear.next() {
            site.insert_lora(name, match_autodiff(lora, autodiff));
        }
    });
    if let (Some(head), Some(heads)) = (head, model.heads_mut()) {
        heads.insert(name, match_autodiff(head, autodiff));
    }
    let registry = model.registry_mut();
    registry.adapters.push((name.to_string(), config));
    // New parameters require gradients, as in PyTorch.
    registry.trainable.adapters.push(name.to_string());
    // Sites hold the active names; refresh them in case `name` is part of the active setup.
    let active = model.registry().active.clone();
    model.broadcast_active(active.as_ref());
}

/// Puts a freshly built module in training mode when the model lives on an autodiff device, so
/// its parameters track gradients like the rest of the model.
pub(crate) fn match_autodiff<M: Module>(module: M, autodiff: bool) -> M {
    if autodiff { module.train() } else { module }
}
