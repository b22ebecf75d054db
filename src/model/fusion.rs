//! AdapterFusion layers: building them at the sites that hold all their adapters, installing,
//! removing, saving and loading them, and their regularisation loss.

use std::path::Path;

use burn::tensor::Tensor;

use super::build::{device_of, match_autodiff};
use super::transfer::{Filler, collect};
use super::{AdapterHost, AdapterModel};
use crate::config::FusionConfig;
use crate::error::{Error, Result};
use crate::io::fusion::{FusionRecord, read_fusion, write_fusion};
use crate::io::keys::{fusion_name, fusion_prefix};
use crate::io::tensors::TensorMap;
use crate::methods::Fusion;
use crate::names::FusionKey;

/// Builds the fusion layer for every residual site that holds all of `key`'s adapters, without
/// changing the model.
pub(crate) fn build<M: AdapterModel>(
    model: &M,
    key: &FusionKey,
    config: &FusionConfig,
) -> Result<Vec<Option<Fusion>>> {
    for name in key.adapters() {
        if model.adapter_config(name)?.bottleneck().is_none() {
            return Err(Error::InvalidSetup(format!(
                "AdapterFusion mixes bottleneck adapters; `{name}` has none"
            )));
        }
    }
    config.validate()?;
    let device = device_of(model)?;
    let fusions = model
        .residual_sites()
        .map(|site| {
            let holds_all = key.adapters().iter().all(|n| site.adapters().contains(n));
            holds_all
                .then(|| {
                    Fusion::new(
                        config,
                        model.hidden_size(),
                        model.attention_dropout(),
                        &device,
                    )
                })
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    if fusions.iter().all(Option::is_none) {
        return Err(Error::InvalidSetup(format!(
            "no site holds all of {:?}, so there is nothing to fuse",
            key.adapters()
        )));
    }
    Ok(fusions)
}

/// Installs fusion layers built by [`build`] and records them.
pub(crate) fn install<M: AdapterHost>(
    model: &mut M,
    key: FusionKey,
    config: FusionConfig,
    fusions: Vec<Option<Fusion>>,
) {
    let autodiff = device_of(model).is_ok_and(|d| d.is_autodiff());
    for (site, fusion) in model.residual_sites_mut().zip(fusions) {
        if let Some(fusion) = fusion {
            site.insert_fusion(&key, match_autodiff(fusion, autodiff));
        }
    }
    model.registry_mut().fusions.push((key, config));
}

/// Removes fusion `key` everywhere.
pub(crate) fn remove<M: AdapterHost>(model: &mut M, key: &FusionKey) {
    for site in model.residual_sites_mut() {
        site.remove_fusion(key);
    }
    let registry = model.registry_mut();
    registry.fusions.retain(|(k, _)| k != key);
    registry.trainable.fusions.retain(|k| k != key);
}

/// Fails unless fusion `key` is absent.
pub(crate) fn check_absent<M: AdapterHost>(model: &M, key: &FusionKey) -> Result<()> {
    match model.registry().fusion_config(key) {
        Some(_) => Err(Error::DuplicateFusion(key.to_string())),
        None => Ok(()),
    }
}

/// `0.01·‖I − W_v‖²` summed over the fusion layers whose value projection trains.
pub(crate) fn regularization_loss<M: AdapterHost>(model: &M) -> Option<Tensor<1>> {
    let registry = model.registry();
    let training = |key: &FusionKey| {
        registry.trainable.fusions.contains(key)
            && registry
                .fusion_config(key)
                .is_some_and(|config| config.regularization)
    };
    model
        .residual_sites()
        .flat_map(|site| site.fusions().iter())
        .filter(|(key, _)| training(key))
        .filter_map(|(_, fusion)| fusion.regularization_loss())
        .reduce(|sum, loss| sum + loss)
}

/// Writes fusion `key` into `dir` in AdapterHub's files.
pub(crate) fn save<M: AdapterHost>(model: &M, dir: &Path, key: &FusionKey) -> Result<()> {
    let config = model
        .registry()
        .fusion_config(key)
        .ok_or_else(|| Error::UnknownFusion(key.to_string()))?;
    let mut tensors = TensorMap::new();
    for site in model.residual_sites() {
        if let Some(fusion) = site.fusions().get(key) {
            let prefix = format!("{}.{key}", fusion_prefix(&model.site_path(site.location())));
            collect(fusion, prefix, &fusion_name, &mut tensors);
        }
    }
    let record = FusionRecord {
        key,
        config,
        hidden_size: model.hidden_size(),
        info: model.model_info(),
        tensors,
    };
    write_fusion(dir, record)
}

/// Reads the fusion saved in `dir` and installs it; its adapters must be loaded already.
pub(crate) fn load<M: AdapterModel>(model: &mut M, dir: &Path) -> Result<FusionKey> {
    let saved = read_fusion(dir)?;
    saved.envelope.check_hidden_size(model.hidden_size())?;
    if let Some(missing) = saved.key.adapters().iter().find(|a| !model.has_adapter(a)) {
        return Err(Error::InvalidSetup(format!(
            "{}: the fusion needs adapter `{missing}`; load it first",
            saved.envelope.path.display()
        )));
    }
    check_absent(model, &saved.key)?;
    let device = device_of(model)?;
    let mut filler = Filler::new(&saved.weights, &device);
    let fusions = build(model, &saved.key, &saved.config)?
        .into_iter()
        .zip(model.residual_sites())
        .map(|(fusion, site)| {
            let site_prefix = fusion_prefix(&model.site_path(site.location()));
            let prefix = format!("{site_prefix}.{}", saved.envelope.name);
            fusion
                .map(|fusion| filler.fill(fusion, prefix, &fusion_name))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    filler.finish()?;
    install(model, saved.key.clone(), saved.config, fusions);
    Ok(saved.key)
}
