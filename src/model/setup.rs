//! Checking a setup against the model before it is activated.

use super::AdapterModel;
use crate::composition::AdapterSetup;
use crate::error::{Error, Result};

/// Checks `setup` against the model: it is valid, its adapters exist, and every `Fuse` block
/// fuses bottleneck adapters through a fusion layer the model has.
pub(crate) fn check<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    setup.validate()?;
    if let Some(missing) = setup.names().into_iter().find(|n| !model.has_adapter(n)) {
        return Err(Error::UnknownAdapter(missing.to_string()));
    }
    check_fusions(model, setup)
}

fn check_fusions<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    if let Some(key) = setup.fusion_key() {
        let names = setup.names();
        if let Some(name) = names.iter().find(|n| {
            model
                .adapter_config(n)
                .is_ok_and(|c| c.bottleneck().is_none())
        }) {
            return Err(Error::InvalidSetup(format!(
                "`{setup}`: AdapterFusion mixes bottleneck adapters; `{name}` has none"
            )));
        }
        if model.registry().fusion_config(&key).is_none() {
            return Err(Error::UnknownFusion(key.to_string()));
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_fusions(model, child))
}
