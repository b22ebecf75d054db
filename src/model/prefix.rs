//! `eject_prefix_tuning`: a prefix MLP folded into the flat form.

use super::AdapterHost;
use super::build::{device_of, match_autodiff};
use super::freeze::trainable;
use crate::config::AdapterConfig;
use crate::error::{Error, Result};

/// Replaces adapter `name`'s reparameterised prefix module by its flat form (the values the
/// MLP computes, trainable as configured) and records `flat` in its config. A flat prefix is
/// left as it is.
pub(crate) fn eject<M: AdapterHost>(model: &mut M, name: &str) -> Result<()> {
    let registry = model.registry();
    let config = registry
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    if config.prefix_tuning().is_none() {
        return Err(Error::InvalidSetup(format!(
            "`{name}` has no prefix tuning to eject"
        )));
    }
    let train = registry.is_trainable(name) || registry.is_base_trainable();
    let autodiff = device_of(model)?.is_autodiff();
    if let Some(pool) = model.prefix_pool_mut() {
        pool.map_prefixes(|key, prefix| {
            if key != name || !prefix.is_reparameterised() {
                return prefix;
            }
            trainable(match_autodiff(prefix.ejected(), autodiff), train)
        });
    }
    if let Some((_, config)) = model
        .registry_mut()
        .adapters
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        set_flat(config);
    }
    Ok(())
}

fn set_flat(config: &mut AdapterConfig) {
    match config {
        AdapterConfig::PrefixTuning(prefix) => prefix.flat = true,
        AdapterConfig::Union(parts) => parts.iter_mut().for_each(set_flat),
        _ => {}
    }
}
