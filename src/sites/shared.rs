//! The parameters an adapter shares across layers (AdapterHub's `shared_parameters`): held once
//! by the model, read by every layer's sites during a forward.

use super::NamedModules;
use crate::methods::SharedPhm;

/// The parameters each adapter shares across its layers: what Compacter's PHM layers share
/// (`shared_phm_rule`, `shared_W_phm`). The host holds one and hands it to every
/// [`ResidualSite::forward`](super::ResidualSite::forward); held once, a shared parameter is a
/// single parameter of the model, so an optimizer step updates it once for every layer.
#[derive(Debug, Clone, Default)]
pub struct SharedParameters {
    phm: NamedModules<SharedPhm>,
}

impl SharedParameters {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// What each adapter's PHM layers share, by adapter name.
    pub fn phm(&self) -> &NamedModules<SharedPhm> {
        &self.phm
    }

    /// Stores what adapter `name`'s PHM layers share.
    pub(crate) fn insert_phm(&mut self, name: &str, shared: SharedPhm) {
        self.phm.insert(name.to_string(), shared);
    }

    /// Removes what adapter `name` shares, if anything.
    pub(crate) fn remove(&mut self, name: &str) {
        self.phm.remove(name);
    }

    /// Replaces what every adapter's PHM layers share by `f(name, shared)`.
    pub(crate) fn map_phm(&mut self, f: impl FnMut(&String, SharedPhm) -> SharedPhm) {
        let phm = std::mem::take(&mut self.phm);
        self.phm = phm.map_entries(f);
    }
}

container_site_module!(SharedParameters, phm);
