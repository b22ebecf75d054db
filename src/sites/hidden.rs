//! The hidden-state site: where ReFT intervenes on a layer's output at chosen positions.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::NamedModules;
use crate::composition::ActivePlan;
use crate::methods::ReftModule;

/// ReFT interventions after one layer (AdapterHub's `ReftLayer`): the active setup's first
/// adapter intervenes, if it has an intervention here.
///
/// A host calls [`HiddenStateSite::forward`] on each layer's output with the forward's
/// [`InterventionPositions`], computed once per forward.
#[derive(Debug, Clone)]
pub struct HiddenStateSite {
    layer: usize,
    refts: NamedModules<ReftModule>,
    plan: Option<Arc<ActivePlan>>,
    active: Option<usize>,
}

/// Where each row's tokens are in one forward: what ReFT's prefix and suffix positions count
/// from (the first and last real tokens of the sequence so far).
#[derive(Debug, Clone)]
pub struct InterventionPositions {
    /// Per row, the first real token's position in the whole sequence.
    firsts: Vec<usize>,
    /// Per row, one past the last real token's position.
    ends: Vec<usize>,
    /// Positions before this forward (a cache's).
    past: usize,
    /// Positions in this forward.
    seq: usize,
    device: Device,
}

impl InterventionPositions {
    /// The positions of a forward over `seq` new positions after `past` cached ones, from the
    /// padding of all of them (`[batch, past + seq]`, 1 = token; read on the host); without a
    /// mask every position is a token.
    pub fn new(
        key_mask: Option<&Tensor<2, Int>>,
        batch: usize,
        past: usize,
        seq: usize,
        device: &Device,
    ) -> Self {
        let total = past + seq;
        let (firsts, ends) = match key_mask {
            Some(mask) => {
                let values = mask
                    .to_data()
                    .convert::<i64>()
                    .try_into_vec::<i64>()
                    .unwrap_or_default();
                values
                    .chunks(total.max(1))
                    .map(|row| {
                        // AdapterHub: the first 1 (`argmax`) and the count of 1s after it
                        let first = row.iter().position(|v| *v == 1).unwrap_or(0);
                        let count = row.iter().filter(|v| **v == 1).count();
                        (first, first + count)
                    })
                    .unzip()
            }
            None => (vec![0; batch], vec![total; batch]),
        };
        Self {
            firsts,
            ends,
            past,
            seq,
            device: device.clone(),
        }
    }

    /// The local indices and validity of each row's first `count` real tokens.
    fn prefix(&self, count: usize) -> Option<(Tensor<2, Int>, Tensor<2>)> {
        let slots = count.min(self.past + self.seq);
        self.slots(slots, |row, k| self.firsts[row] + k)
    }

    /// The local indices and validity of each row's last `count` real tokens, in order.
    fn suffix(&self, count: usize) -> Option<(Tensor<2, Int>, Tensor<2>)> {
        let slots = count.min(self.past + self.seq);
        self.slots(slots, |row, k| {
            (self.ends[row] + k)
                .checked_sub(slots)
                .unwrap_or(usize::MAX)
        })
    }

    /// `[batch, slots]` local indices of `absolute(row, slot)` (0 where outside this forward)
    /// and 1/0 validity; `None` when no slot is inside.
    fn slots(
        &self,
        slots: usize,
        absolute: impl Fn(usize, usize) -> usize,
    ) -> Option<(Tensor<2, Int>, Tensor<2>)> {
        let batch = self.firsts.len();
        let mut index = Vec::with_capacity(batch * slots);
        let mut valid = Vec::with_capacity(batch * slots);
        for row in 0..batch {
            for k in 0..slots {
                let local = absolute(row, k)
                    .checked_sub(self.past)
                    .filter(|l| *l < self.seq);
                index.push(local.unwrap_or(0) as i64);
                valid.push(if local.is_some() { 1.0f32 } else { 0.0 });
            }
        }
        if slots == 0 || !valid.contains(&1.0) {
            return None;
        }
        let index = Tensor::from_data(TensorData::new(index, [batch, slots]), &self.device);
        let valid = Tensor::from_data(TensorData::new(valid, [batch, slots]), &self.device);
        Some((index, valid))
    }
}

impl HiddenStateSite {
    /// An empty site after layer `layer`.
    pub fn new(layer: usize) -> Self {
        Self {
            layer,
            refts: NamedModules::default(),
            plan: None,
            active: None,
        }
    }

    /// The layer this site follows.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Whether the active setup intervenes here (a host computes the forward's
    /// [`InterventionPositions`], which reads the mask on the host, only then).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The interventions held here, by adapter name.
    pub fn refts(&self) -> &NamedModules<ReftModule> {
        &self.refts
    }

    /// Stores `reft` under `name`.
    pub(crate) fn insert(&mut self, name: &str, reft: ReftModule) {
        self.refts.insert(name.to_string(), reft);
        self.compile();
    }

    /// Removes the intervention of `name`, if present.
    pub(crate) fn remove(&mut self, name: &str) {
        if self.refts.remove(name).is_some() {
            self.compile();
        }
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every intervention by `f(name, module)`.
    pub(crate) fn map_refts(&mut self, f: impl FnMut(&String, ReftModule) -> ReftModule) {
        let refts = std::mem::take(&mut self.refts);
        self.refts = refts.map_entries(f);
    }

    fn compile(&mut self) {
        let plan = self.plan.as_ref().filter(|plan| !plan.skips(self.layer));
        let first = plan.and_then(|plan| plan.setup().first());
        self.active = first.and_then(|name| self.refts.position(name));
    }

    /// `hidden` (the layer's output) with the active intervention applied.
    ///
    /// # Shapes
    ///
    /// - hidden, output: `[batch, seq, width]`
    pub fn forward(&self, hidden: Tensor<3>, positions: &InterventionPositions) -> Tensor<3> {
        let Some(index) = self.active else {
            return hidden;
        };
        let reft = self.refts.at(index);
        let prefix = positions.prefix(reft.prefix_positions);
        let suffix = positions.suffix(reft.suffix_positions);
        if prefix.is_none() && suffix.is_none() {
            return hidden;
        }
        reft.forward(hidden, prefix.as_ref(), suffix.as_ref())
    }
}

container_site_module!(HiddenStateSite, refts);
