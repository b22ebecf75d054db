//! The residual site: where a sublayer adds its residual and applies its LayerNorm.

use std::fmt;
use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::LayerNorm;
use burn::tensor::{Device, Tensor};

use super::NamedModules;
use crate::config::{AdapterConfig, BnConfig};
use crate::error::Result;
use crate::methods::{Bottleneck, apply_norm};

/// Which residual block of a transformer layer a site follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SitePosition {
    /// After the multi-head attention output (AdapterHub's `mh_adapter` location).
    Attention,
    /// After the feed-forward output (AdapterHub's `output_adapter` location).
    Output,
}

/// Where a site sits in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteLocation {
    /// Index of the transformer layer.
    pub layer: usize,
    /// Residual block within the layer.
    pub position: SitePosition,
}

impl fmt::Display for SiteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = match self.position {
            SitePosition::Attention => "attention",
            SitePosition::Output => "output",
        };
        write!(f, "layer {} {position}", self.layer)
    }
}

/// Bottleneck adapters at one residual block, and the active setup there.
///
/// A transformer layer calls [`ResidualSite::forward`] in place of `layer_norm(hidden + residual)`
/// (or `hidden + residual` in pre-norm layers); with no active adapter the result is exactly that
/// expression.
#[derive(Debug, Clone)]
pub struct ResidualSite {
    location: SiteLocation,
    adapters: NamedModules<Bottleneck>,
    /// Names run in sequence at this site (a single name or a Stack), shared between sites.
    active: Option<Arc<[String]>>,
}

impl ResidualSite {
    /// An empty site at `location`.
    pub fn new(location: SiteLocation) -> Self {
        Self {
            location,
            adapters: NamedModules::default(),
            active: None,
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

    /// The bottleneck config `config` places at this site, if any.
    pub fn placed<'a>(&self, config: &'a AdapterConfig) -> Option<&'a BnConfig> {
        config.bottleneck_at(
            self.location.position == SitePosition::Attention,
            self.location.layer,
        )
    }

    /// Builds and stores the adapter `name` if `config` places one here. Returns whether it did.
    pub fn add_adapter(
        &mut self,
        name: &str,
        config: &AdapterConfig,
        hidden_size: usize,
        device: &Device,
    ) -> Result<bool> {
        let Some(bn) = self.placed(config) else {
            return Ok(false);
        };
        let adapter = Bottleneck::new(bn, hidden_size, self.location.layer, device)?;
        self.adapters.insert(name, adapter);
        Ok(true)
    }

    /// Stores a ready-made adapter under `name` (used when loading).
    pub fn insert_adapter(&mut self, name: &str, adapter: Bottleneck) {
        self.adapters.insert(name, adapter);
    }

    /// Removes the adapter `name`, if present here.
    pub fn delete_adapter(&mut self, name: &str) -> Option<Bottleneck> {
        self.adapters.remove(name)
    }

    /// Sets the names run in sequence at this site (`None` deactivates).
    pub fn set_active(&mut self, active: Option<Arc<[String]>>) {
        self.active = active;
    }

    /// Applies the active adapters, then the sublayer's residual and LayerNorm.
    ///
    /// `hidden` is the sublayer output (after its dense projection and dropout), `residual` the
    /// sublayer input, `layer_norm` the sublayer's own LayerNorm (`None` in pre-norm hosts, where
    /// the block ends in `hidden + residual`).
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
    ) -> Tensor<3> {
        let mut stack = self
            .active
            .iter()
            .flat_map(|names| names.iter())
            .filter_map(|name| self.adapters.get(name))
            .peekable();
        if stack.peek().is_none() {
            return apply_norm(layer_norm, hidden + residual);
        }
        let mut output = hidden.clone();
        let mut last = None;
        for adapter in stack {
            let input = adapter.pre_forward(output, residual.clone(), layer_norm);
            output = adapter.forward(&input);
            last = Some(adapter);
        }
        let last = last.expect("the stack is not empty");
        last.post_forward(output, hidden, residual, layer_norm)
    }
}

impl Module for ResidualSite {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.adapters.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            adapters: self.adapters.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            adapters: self.adapters.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            adapters: self.adapters.valid(),
            location: self.location,
            active: self.active.clone(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            adapters: self.adapters.materialize(),
            ..self
        }
    }

    // The adapters are visited directly under the site's own field name, so a site stored in a
    // field called `adapters` yields AdapterHub's `...output.adapters.<name>.*` paths.
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.adapters.visit(visitor)
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self {
            adapters: self.adapters.map(mapper),
            ..self
        }
    }
}

impl ModuleDisplayDefault for ResidualSite {
    fn content(&self, content: Content) -> Option<Content> {
        self.adapters.content(content)
    }
}

impl ModuleDisplay for ResidualSite {}
