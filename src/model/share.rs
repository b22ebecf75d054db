//! `share_parameters` / `unshare_parameters`: MTL-LoRA adapters that hold one `A` and one set
//! of up projections between them (AdapterHub's `ModelAdaptersMixin.share_parameters`).

use super::AdapterModel;
use crate::error::{Error, Result};

/// Makes the MTL-LoRA adapters `names` share `reference`'s (default: the first's) `A` and up
/// projections at every projection they wrap, under the key `names` joined by `,`; each keeps
/// its task-specific matrix and mixing weights. Checked everywhere before anything changes.
pub(crate) fn share<M: AdapterModel>(
    model: &mut M,
    names: &[&str],
    reference: Option<&str>,
) -> Result<()> {
    let Some(first) = names.first() else {
        return Err(Error::InvalidSetup(
            "share_parameters needs at least one adapter".into(),
        ));
    };
    let reference = reference.unwrap_or(first);
    if !names.contains(&reference) {
        return Err(Error::InvalidSetup(format!(
            "share_parameters: the reference `{reference}` is not among {}",
            names.join(", ")
        )));
    }
    for name in names {
        let config = model.adapter_config(name)?;
        if config.lora().is_none_or(|lora| lora.multi_task.is_none()) {
            return Err(Error::InvalidSetup(format!(
                "share_parameters shares MTL-LoRA factors; `{name}` is a {} adapter",
                config.architecture()
            )));
        }
    }
    if let Some(merged) = model.registry().merged.as_deref()
        && names.contains(&merged)
    {
        return Err(Error::InvalidSetup(format!(
            "share_parameters: `{merged}` is merged; reset it first"
        )));
    }
    if !model.linear_sites().any(|site| site.holds_all(names)) {
        return Err(Error::InvalidSetup(format!(
            "share_parameters: no projection holds all of {}",
            names.join(", ")
        )));
    }
    for site in model.linear_sites() {
        site.check_share(names)?;
    }
    let key = names.join(",");
    for site in model.linear_sites_mut() {
        site.share(&key, names, reference);
    }
    Ok(())
}

/// Gives each of the adapters `names` its own copy of the factors shared under their key
/// again.
pub(crate) fn unshare<M: AdapterModel>(model: &mut M, names: &[&str]) -> Result<()> {
    let key = names.join(",");
    if !model
        .linear_sites()
        .any(|site| site.shared().get(&key).is_some())
    {
        return Err(Error::InvalidSetup(format!(
            "unshare_parameters: no factors are shared under `{key}`"
        )));
    }
    for site in model.linear_sites_mut() {
        site.unshare(&key);
    }
    Ok(())
}
