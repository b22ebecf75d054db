//! Folding a LoRA/IA3 adapter into the weights of the layers it wraps, and taking it out.

use super::AdapterModel;
use crate::error::{Error, Result};

/// Merges adapter `name` at every linear site, all or nothing.
pub(crate) fn merge<M: AdapterModel>(model: &mut M, name: &str) -> Result<()> {
    let config = model.adapter_config(name)?;
    let not_mergeable = |reason: String| Error::NotMergeable {
        name: name.to_string(),
        reason,
    };
    if config.lora().is_none() {
        return Err(not_mergeable(format!(
            "it is a `{}` adapter; only LoRA and IA3 fold into weights",
            config.architecture()
        )));
    }
    if let Some(merged) = model.merged_adapter() {
        if merged == name {
            return Ok(());
        }
        return Err(not_mergeable(format!(
            "`{merged}` is merged already; call `reset_adapter` first"
        )));
    }
    for site in model.linear_sites() {
        if let Some(lora) = site.loras().get(name) {
            lora.check_mergeable()
                .map_err(|reason| not_mergeable(format!("at {}: {reason}", site.location())))?;
        }
    }
    // Checked above: no other adapter is merged, and this one can be; a site that disagrees
    // with the registry is undone rather than left half merged.
    let merged = model
        .linear_sites_mut()
        .try_for_each(|site| site.merge(name));
    if let Err(e) = merged {
        reset(model);
        return Err(e);
    }
    model.registry_mut().merged = Some(name.to_string());
    Ok(())
}

/// Takes the merged adapter out of the weights again.
pub(crate) fn reset<M: AdapterModel>(model: &mut M) {
    for site in model.linear_sites_mut() {
        site.reset();
    }
    model.registry_mut().merged = None;
}
