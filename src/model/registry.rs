//! The registry a host keeps: adapter names and configs, the active setup, trainability,
//! merged adapter and fusion layers.

use super::compose::FusionEntry;
use crate::composition::AdapterSetup;
use crate::config::{AdapterConfig, FusionConfig};

/// Names and configs of a model's adapters, and its active setup. Hosts store one in a
/// `#[module(skip)]` field.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    pub(super) adapters: Vec<(String, AdapterConfig)>,
    pub(super) active: Option<AdapterSetup>,
    /// Configured trainability, kept here because burn only reports the effective state (always
    /// "no gradients" on a device without autodiff).
    pub(super) trainable: Trainability,
    /// The LoRA/IA3 adapter folded into the weights.
    pub(super) merged: Option<String>,
    /// AdapterFusion layers.
    pub(super) fusions: Vec<FusionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trainability {
    pub(super) base: bool,
    pub(super) adapters: Vec<String>,
}

impl Default for AdapterRegistry {
    fn default() -> Self {
        Self {
            adapters: Vec::new(),
            active: None,
            trainable: Trainability {
                base: true,
                adapters: Vec::new(),
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
        self.active.as_ref()
    }

    /// Whether adapter `name` is configured to train (set by `add_adapter`, `train_adapter` and
    /// `freeze_model`).
    pub fn is_trainable(&self, name: &str) -> bool {
        self.trainable.adapters.iter().any(|n| n == name)
    }

    /// Whether the base model's parameters are configured to train.
    pub fn is_base_trainable(&self) -> bool {
        self.trainable.base
    }

    /// A fusion's fused adapters and config.
    pub(crate) fn fusion(&self, name: &str) -> Option<(&str, &[String], &FusionConfig)> {
        self.fusions
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.name.as_str(), f.adapters.as_slice(), &f.config))
    }

    /// Names of the fusion layers (`"a,b"`).
    pub fn fusion_names(&self) -> impl Iterator<Item = &str> {
        self.fusions.iter().map(|f| f.name.as_str())
    }

    /// Copies of the input batch the active setup runs (its `Parallel` block's children, else
    /// 1). Hosts repeat their input this many times along the batch.
    pub fn parallel_channels(&self) -> usize {
        self.active
            .as_ref()
            .map_or(1, AdapterSetup::parallel_channels)
    }
}
