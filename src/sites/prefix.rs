//! The prefix pool: the model-level site that holds each adapter's prefix module and computes
//! the prefixes of one forward for every [`AttentionSite`](super::AttentionSite).

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::NamedModules;
use crate::composition::{ActivePlan, Rows};
use crate::methods::PrefixTuning;

/// The prefix-tuning modules of a host (AdapterHub's `PrefixTuningPool`): one per adapter,
/// producing the keys and values of every attention layer the adapter reaches.
///
/// A host that supports prefix tuning holds one pool and one
/// [`AttentionSite`](super::AttentionSite) per attention layer; at the start of a forward it
/// calls [`PrefixPool::states`] once and hands the result to every layer's site.
#[derive(Debug, Clone)]
pub struct PrefixPool {
    heads: usize,
    head_dim: usize,
    prefixes: NamedModules<PrefixTuning>,
    plan: Option<Arc<ActivePlan>>,
    /// Indices of the prefixes the active setup names.
    active: Arc<[usize]>,
}

impl PrefixPool {
    /// An empty pool for attention layers with `kv_heads` key/value heads of width `head_dim`.
    pub fn new(kv_heads: usize, head_dim: usize) -> Self {
        Self {
            heads: kv_heads,
            head_dim,
            prefixes: NamedModules::default(),
            plan: None,
            active: Arc::new([]),
        }
    }

    /// Key/value heads of the attention layers.
    pub fn kv_heads(&self) -> usize {
        self.heads
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The prefix modules held here, by adapter name.
    pub fn prefixes(&self) -> &NamedModules<PrefixTuning> {
        &self.prefixes
    }

    /// Stores `prefix` under `name`.
    pub(crate) fn insert(&mut self, name: &str, prefix: PrefixTuning) {
        self.prefixes.insert(name.to_string(), prefix);
        self.compile();
    }

    /// Removes the prefix of `name`, if present.
    pub(crate) fn remove(&mut self, name: &str) {
        if self.prefixes.remove(name).is_some() {
            self.compile();
        }
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every prefix module by `f(name, module)`.
    pub(crate) fn map_prefixes(&mut self, f: impl FnMut(&String, PrefixTuning) -> PrefixTuning) {
        let prefixes = std::mem::take(&mut self.prefixes);
        self.prefixes = prefixes.map_entries(f);
    }

    fn compile(&mut self) {
        let names = self
            .plan
            .as_ref()
            .map(|plan| plan.setup().names())
            .unwrap_or_default();
        self.active = names
            .iter()
            .filter_map(|name| self.prefixes.position(*name))
            .collect();
    }

    /// The prefixes of one forward of `batch` rows (the rows the layers see, `Parallel`'s
    /// copies included): empty, and free, when no active adapter has a prefix.
    pub fn states(&self, batch: usize) -> PrefixStates {
        PrefixStates {
            entries: self
                .active
                .iter()
                .map(|&i| {
                    let (name, prefix) = self.prefixes.entry(i);
                    (name.clone(), prefix.key_values(batch))
                })
                .collect(),
        }
    }
}

/// The prefixes of one forward, by adapter (from [`PrefixPool::states`]).
#[derive(Debug, Clone, Default)]
pub struct PrefixStates {
    /// `[layers · 2, batch or 1, heads, length, head_dim]` per adapter.
    entries: Vec<(String, Tensor<5>)>,
}

impl PrefixStates {
    /// No prefixes (for hosts' forwards that run without a pool).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether no adapter has a prefix in this forward.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The states of `rows` of the batch (those drawn per row; the others broadcast).
    pub(crate) fn rows(&self, rows: &Rows, device: &Device) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|(name, states)| {
                let states = match rows {
                    _ if states.dims()[1] == 1 => states.clone(),
                    Rows::Range { start, len } => states.clone().narrow(1, *start, *len),
                    Rows::Gather(rows) => {
                        let data = TensorData::new(rows.clone(), [rows.len()]);
                        states
                            .clone()
                            .select(1, Tensor::<1, Int>::from_data(data, device))
                    }
                };
                (name.clone(), states)
            })
            .collect();
        Self { entries }
    }

    /// Keys and values of adapter `name` at the `index`-th layer holding its prefix,
    /// `[batch or 1, heads, length, head_dim]` each.
    pub(crate) fn layer(&self, name: &str, index: usize) -> Option<[Tensor<4>; 2]> {
        let (_, states) = self.entries.iter().find(|(n, _)| n == name)?;
        let [_, batch, heads, length, head_dim] = states.dims();
        let take = |i: usize| {
            states
                .clone()
                .narrow(0, 2 * index + i, 1)
                .reshape([batch, heads, length, head_dim])
        };
        Some([take(0), take(1)])
    }
}

container_site_module!(PrefixPool, prefixes);
