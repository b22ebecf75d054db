//! A host with a single residual site: the smallest thing the model API runs on, for checking a
//! site's math against closed forms.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use burn_adapters::AdapterRegistry;
use burn_adapters::prelude::*;
use burn_adapters::sites::{ResidualSite, SiteLocation, SitePosition};

#[derive(Module, Debug)]
pub struct OneSite {
    /// The site, at layer 0.
    pub site: ResidualSite,
    /// A parameter, so that the host has a device to build adapters on.
    anchor: Param<Tensor<1>>,
    width: usize,
    #[module(skip)]
    registry: AdapterRegistry,
}

impl OneSite {
    pub fn new(width: usize, position: SitePosition, device: &Device) -> Self {
        Self {
            site: ResidualSite::new(SiteLocation { layer: 0, position }),
            anchor: Param::from_tensor(Tensor::zeros([1], device)),
            width,
            registry: AdapterRegistry::default(),
        }
    }

    /// The host with adapters `(name, config string)` added and `active` activated.
    pub fn with(
        width: usize,
        position: SitePosition,
        adapters: &[(&str, &str)],
        active: &str,
        device: &Device,
    ) -> Self {
        let mut host = Self::new(width, position, device);
        for (name, config) in adapters {
            host.add_adapter(name, AdapterConfig::load(config).unwrap())
                .unwrap();
        }
        host.set_active_adapters(active).unwrap();
        host
    }
}

impl AdapterHost for OneSite {
    fn hidden_size(&self) -> usize {
        self.width
    }
    fn num_layers(&self) -> usize {
        1
    }
    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite> {
        std::iter::once(&self.site)
    }
    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite> {
        std::iter::once(&mut self.site)
    }
    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }
    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }
}
