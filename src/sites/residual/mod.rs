//! The residual site: where a sublayer adds its residual and applies its LayerNorm.

mod program;

use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};

use super::rows::run_row_groups;
use super::{NamedModules, SharedParameters};
use crate::composition::ActivePlan;
use crate::config::SiteLocation;
use crate::methods::{Bottleneck, Fusion, apply_norm};
use crate::names::FusionKey;
use program::{Modules, Runner, Step};

/// Bottleneck adapters and AdapterFusion layers at one residual block, and what the active setup
/// runs here.
///
/// A transformer layer calls [`ResidualSite::forward`] in place of `layer_norm(hidden + residual)`
/// (or `hidden + residual` in pre-norm layers); with no active adapter the result is exactly that
/// expression. The model API ([`AdapterModel`](crate::AdapterModel)) fills the site and
/// activates setups on it; a site cannot be filled around it (which would skip what the model
/// API does, such as putting new modules in training mode on autodiff devices):
///
/// ```compile_fail
/// use burn::tensor::Device;
/// use burn_adapters::config::{AdapterConfig, BnConfig};
/// use burn_adapters::sites::{ResidualSite, SiteLocation, SitePosition};
///
/// let location = SiteLocation { layer: 0, position: SitePosition::Output };
/// let mut site = ResidualSite::new(location);
/// let config = AdapterConfig::Bottleneck(BnConfig::seq_bn());
/// site.add_adapter("a", &config, 8, &Device::flex()).unwrap(); // not part of the API
/// ```
#[derive(Debug, Clone)]
pub struct ResidualSite {
    location: SiteLocation,
    adapters: NamedModules<Bottleneck>,
    fusions: NamedModules<Fusion, FusionKey>,
    /// The active setup, shared by every site of the host.
    plan: Option<Arc<ActivePlan>>,
    /// What each of the plan's variants runs here; `None` when none runs an adapter here.
    programs: Option<Arc<[Option<Step>]>>,
}

impl ResidualSite {
    /// An empty site at `location`.
    pub fn new(location: SiteLocation) -> Self {
        Self {
            location,
            adapters: NamedModules::default(),
            fusions: NamedModules::default(),
            plan: None,
            programs: None,
        }
    }

    /// Where this site sits.
    pub fn location(&self) -> SiteLocation {
        self.location
    }

    /// The adapters held here.
    pub fn adapters(&self) -> &NamedModules<Bottleneck> {
        &self.adapters
    }

    /// The AdapterFusion layers held here.
    pub fn fusions(&self) -> &NamedModules<Fusion, FusionKey> {
        &self.fusions
    }

    /// Stores `adapter` under `name`.
    pub(crate) fn insert_adapter(&mut self, name: &str, adapter: Bottleneck) {
        self.adapters.insert(name.to_string(), adapter);
        self.compile();
    }

    /// Removes the adapter `name`, if present here.
    pub(crate) fn remove_adapter(&mut self, name: &str) {
        if self.adapters.remove(name).is_some() {
            self.compile();
        }
    }

    /// Stores a fusion layer under `key`.
    pub(crate) fn insert_fusion(&mut self, key: &FusionKey, fusion: Fusion) {
        self.fusions.insert(key.clone(), fusion);
        self.compile();
    }

    /// Removes the fusion layer `key`, if present here.
    pub(crate) fn remove_fusion(&mut self, key: &FusionKey) {
        if self.fusions.remove(key).is_some() {
            self.compile();
        }
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every adapter and fusion layer by `f(module)`; `f` must keep their structure.
    pub(crate) fn map_modules(
        &mut self,
        adapter: impl Fn(&String, Bottleneck) -> Bottleneck,
        fusion: impl Fn(&FusionKey, Fusion) -> Fusion,
    ) {
        let adapters = std::mem::take(&mut self.adapters);
        self.adapters = adapters.map_entries(adapter);
        let fusions = std::mem::take(&mut self.fusions);
        self.fusions = fusions.map_entries(fusion);
    }

    /// Resolves the active plan's variants against what the site holds.
    fn compile(&mut self) {
        let modules = Modules {
            adapters: &self.adapters,
            fusions: &self.fusions,
        };
        let layer = self.location.layer;
        let plan = self.plan.as_ref().filter(|plan| !plan.skips(layer));
        self.programs = plan.and_then(|plan| {
            let programs: Arc<[Option<Step>]> =
                plan.variants().iter().map(|v| modules.compile(v)).collect();
            programs.iter().any(Option::is_some).then_some(programs)
        });
    }

    /// Applies the active adapters, then the sublayer's residual and LayerNorm.
    ///
    /// `hidden` is the sublayer output (after its dense projection and dropout), `residual` the
    /// sublayer input, `layer_norm` the sublayer's own LayerNorm (`None` in pre-norm hosts, where
    /// the block ends in `hidden + residual`), `shared` the model's [`SharedParameters`].
    ///
    /// # Shapes
    ///
    /// - hidden, residual: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        residual: Tensor<3>,
        layer_norm: Option<&LayerNorm>,
        shared: &SharedParameters,
    ) -> Tensor<3> {
        let (Some(plan), Some(programs)) = (&self.plan, &self.programs) else {
            return apply_norm(layer_norm, hidden + residual);
        };
        let runner = Runner {
            modules: Modules {
                adapters: &self.adapters,
                fusions: &self.fusions,
            },
            layer_norm,
            shared,
        };
        let run = |variant: usize, [hidden, residual]: [Tensor<3>; 2]| match &programs[variant] {
            Some(step) => runner.run(step, hidden, residual),
            None => apply_norm(layer_norm, hidden + residual),
        };
        if !plan.routes_rows() {
            return run(0, [hidden, residual]);
        }
        let [batch, _, _] = hidden.dims();
        run_row_groups(&plan.routing(batch), [hidden, residual], run)
    }
}

impl Module for ResidualSite {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.fusions
            .collect_devices(self.adapters.collect_devices(devices))
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.fork(device),
            fusions: self.fusions.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.to_device(device),
            fusions: self.fusions.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            adapters: self.adapters.train(),
            fusions: self.fusions.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            location: self.location,
            adapters: self.adapters.valid(),
            fusions: self.fusions.valid(),
            plan: self.plan.clone(),
            programs: self.programs.clone(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            adapters: self.adapters.materialize(),
            fusions: self.fusions.materialize(),
            ..self
        }
    }

    // Adapters and fusion layers are visited directly under the site's own field name, so a
    // site stored in a field called `adapters` yields AdapterHub's `...output.adapters.<name>.*`
    // paths; fusion layers appear as `...adapters.<a,b>.*` (no adapter name has a comma).
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.adapters.visit(visitor);
        self.fusions.visit(visitor);
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self {
            adapters: self.adapters.map(mapper),
            fusions: self.fusions.map(mapper),
            ..self
        }
    }
}

impl ModuleDisplayDefault for ResidualSite {
    fn content(&self, content: Content) -> Option<Content> {
        let content = self.adapters.content(content)?;
        if self.fusions.is_empty() {
            Some(content)
        } else {
            self.fusions.content(content)
        }
    }
}

impl ModuleDisplay for ResidualSite {}
