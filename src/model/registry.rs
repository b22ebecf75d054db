//! The registry a host keeps: adapter names and configs, the active setup, trainability, the
//! merged adapter and the fusion layers.

use std::sync::Arc;

use crate::composition::{ActivePlan, AdapterSetup};
use crate::config::{AdapterConfig, FusionConfig};
use crate::names::FusionKey;

/// Names and configs of a model's adapters and fusion layers, and the active setup. Hosts store
/// one in a `#[module(skip)]` field; the model API keeps it.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    pub(super) adapters: Vec<(String, AdapterConfig)>,
    /// The active setup, compiled; the sites share it.
    pub(super) active: Option<Arc<ActivePlan>>,
    /// Configured trainability, kept here because burn only reports the effective state (always
    /// "no gradients" on a device without autodiff).
    pub(super) trainable: Trainability,
    /// The LoRA/IA3 adapter folded into the weights.
    pub(super) merged: Option<String>,
    /// AdapterFusion layers.
    pub(super) fusions: Vec<(FusionKey, FusionConfig)>,
}

/// What trains: the base model, and the adapters, fusion layers and heads named here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Trainability {
    pub base: bool,
    pub adapters: Vec<String>,
    pub fusions: Vec<FusionKey>,
    pub heads: Vec<String>,
}

impl Default for AdapterRegistry {
    fn default() -> Self {
        Self {
            adapters: Vec::new(),
            active: None,
            trainable: Trainability {
                base: true,
                ..Trainability::default()
            },
            merged: None,
            fusions: Vec::new(),
        }
    }
}

impl AdapterRegistry {
    /// The config of adapter `name`.
    pub fn config(&self, name: &str) -> Option<&AdapterConfig> {
        self.adapters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// Adapter names in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.adapters.iter().map(|(n, _)| n.as_str())
    }

    /// The active setup.
    pub fn active(&self) -> Option<&AdapterSetup> {
        self.active.as_deref().map(ActivePlan::setup)
    }

    /// The layers whose adapters the active setup skips (AdapterDrop; empty without one).
    pub fn skip_layers(&self) -> &[usize] {
        self.active.as_deref().map_or(&[], ActivePlan::skip_layers)
    }

    /// Whether adapter `name` is configured to train (set by `add_adapter`, `train_adapter`,
    /// `train_adapter_fusion` and `freeze_model`).
    pub fn is_trainable(&self, name: &str) -> bool {
        self.trainable.adapters.iter().any(|n| n == name)
    }

    /// Whether the base model's parameters are configured to train.
    pub fn is_base_trainable(&self) -> bool {
        self.trainable.base
    }

    /// The keys of the AdapterFusion layers, in the order they were added.
    pub fn fusions(&self) -> impl Iterator<Item = &FusionKey> {
        self.fusions.iter().map(|(key, _)| key)
    }

    /// The config of the fusion layer `key`.
    pub fn fusion_config(&self, key: &FusionKey) -> Option<&FusionConfig> {
        self.fusions
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, config)| config)
    }

    /// Copies of the input batch the active setup runs (its `Parallel` block's children, else
    /// 1). Hosts repeat their input this many times along the batch.
    pub fn parallel_channels(&self) -> usize {
        self.active
            .as_deref()
            .map_or(1, ActivePlan::parallel_channels)
    }
}
