//! The host trait: what a transformer exposes so the model API can work on it.

use burn::module::Module;

use super::AdapterRegistry;
use crate::heads::PredictionHead;
use crate::sites::{LinearPosition, LinearSite, NamedModules, ResidualSite};

/// Identity of a host model, recorded in saved `adapter_config.json` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// transformers' `model_type` (`"bert"`).
    pub model_type: String,
    /// transformers' class name (`"BertModel"`).
    pub model_class: String,
    /// The checkpoint name, if known.
    pub model_name: Option<String>,
}

impl ModelInfo {
    /// The class name AdapterHub records for the same model with heads (`BertAdapterModel`).
    pub fn model_class_with_heads(&self) -> String {
        format!("{}AdapterModel", self.model_class.trim_end_matches("Model"))
    }
}

/// A transformer that carries adapter sites.
///
/// Implement this for your own burn model to get the whole [`AdapterModel`](super::AdapterModel)
/// API (`add_adapter`, `train_adapter`, `set_active_adapters`, `save_adapter`, ...). A host:
/// - holds one [`ResidualSite`] per residual block it wants adapted, each created with its
///   [`SiteLocation`](crate::sites::SiteLocation) and called in place of
///   `layer_norm(hidden + residual)`; store each site in a field named `adapters` or
///   `<something>_adapters`, so that parameter paths read `...adapters.<name>...` (this is how
///   `train_adapter` and `adapter_summary` recognise adapter parameters);
/// - optionally wraps its attention and feed-forward projections in [`LinearSite`]s (drop-ins
///   for burn's `Linear`) and enumerates them in [`AdapterHost::visit_linear_sites`], which
///   makes LoRA and IA3 available;
/// - holds an [`AdapterRegistry`] in a `#[module(skip)]` field;
/// - enumerates its sites in a fixed order.
///
/// See `docs/guide.md` and `examples/custom_host.rs` for a complete small host.
pub trait AdapterHost: Module + Sized {
    /// Width of the hidden states at the sites.
    fn hidden_size(&self) -> usize;

    /// Number of transformer layers (the range of `leave_out` and per-layer reduction factors).
    fn num_layers(&self) -> usize;

    /// Calls `f` on every site, in a fixed order.
    fn visit_sites(&self, f: &mut dyn FnMut(&ResidualSite));

    /// Calls `f` on every site mutably, in the same order as [`AdapterHost::visit_sites`].
    fn visit_sites_mut(&mut self, f: &mut dyn FnMut(&mut ResidualSite));

    /// Calls `f` on every linear site (the layers LoRA and IA3 wrap), in a fixed order. Hosts
    /// without linear sites keep the default and cannot take LoRA/IA3 adapters.
    fn visit_linear_sites(&self, f: &mut dyn FnMut(&LinearSite)) {
        let _ = f;
    }

    /// Calls `f` on every linear site mutably, in the same order as
    /// [`AdapterHost::visit_linear_sites`].
    fn visit_linear_sites_mut(&mut self, f: &mut dyn FnMut(&mut LinearSite)) {
        let _ = f;
    }

    /// The adapter registry stored in the host.
    fn registry(&self) -> &AdapterRegistry;

    /// The adapter registry stored in the host, mutably.
    fn registry_mut(&mut self) -> &mut AdapterRegistry;

    /// The prediction heads, for hosts that carry them (in a field named `heads`).
    fn heads(&self) -> Option<&NamedModules<PredictionHead>> {
        None
    }

    /// The prediction heads, mutably.
    fn heads_mut(&mut self) -> Option<&mut NamedModules<PredictionHead>> {
        None
    }

    /// Dropout of new heads whose config gives none (the model's hidden dropout).
    fn head_dropout(&self) -> f64 {
        0.1
    }

    /// Dropout of new AdapterFusion layers whose config gives none (the model's attention
    /// dropout).
    fn attention_dropout(&self) -> f64 {
        0.1
    }

    /// How saved adapters describe this model.
    fn model_info(&self) -> ModelInfo {
        ModelInfo {
            model_type: "bert".into(),
            model_class: "BertModel".into(),
            model_name: None,
        }
    }

    /// Prefix of this host's site paths relative to the AdapterHub `BertModel` root, used when
    /// mapping parameter paths to AdapterHub tensor names (empty for hosts whose paths already
    /// start at `encoder.layer.{i}`).
    fn site_path(&self, location: crate::sites::SiteLocation) -> String {
        let block = match location.position {
            crate::sites::SitePosition::Attention => "attention.output",
            crate::sites::SitePosition::Output => "output",
        };
        format!("encoder.layer.{}.{block}.adapters", location.layer)
    }

    /// Path of a linear site's modules in AdapterHub's `BertModel` naming
    /// (`encoder.layer.{i}.attention.self.query.loras`), used for tensor names in files.
    fn linear_site_path(&self, location: crate::sites::LinearLocation) -> String {
        let layer = match location.position {
            LinearPosition::Query => "attention.self.query",
            LinearPosition::Key => "attention.self.key",
            LinearPosition::Value => "attention.self.value",
            LinearPosition::Intermediate => "intermediate.dense",
            LinearPosition::Output => "output.dense",
        };
        format!("encoder.layer.{}.{layer}.loras", location.layer)
    }
}
