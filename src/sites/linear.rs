//! The linear site: a drop-in for burn's `Linear` that carries named LoRA/IA3 modules.

use std::fmt;
use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::NamedModules;
use super::rows::run_row_groups;
use crate::composition::AdapterSetup;
use crate::config::{AdapterConfig, LoRAConfig};
use crate::error::{Error, Result};
use crate::methods::LoRA;

/// Which projection of a transformer layer a linear site wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearPosition {
    /// Attention query projection (`attn_matrices` entry `q`).
    Query,
    /// Attention key projection (`k`).
    Key,
    /// Attention value projection (`v`).
    Value,
    /// First feed-forward projection (`intermediate_lora`).
    Intermediate,
    /// Second feed-forward projection (`output_lora`).
    Output,
}

/// Where a linear site sits in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinearLocation {
    /// Index of the transformer layer.
    pub layer: usize,
    /// Projection within the layer.
    pub position: LinearPosition,
}

impl fmt::Display for LinearLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {} {:?}", self.layer, self.position)
    }
}

impl LoRAConfig {
    /// Whether this config puts a module at `location`.
    pub fn places_at(&self, location: LinearLocation) -> bool {
        if self.leave_out.contains(&location.layer) {
            return false;
        }
        let attention =
            |matrix: &str| self.selfattn_lora && self.attn_matrices.iter().any(|m| m == matrix);
        match location.position {
            LinearPosition::Query => attention("q"),
            LinearPosition::Key => attention("k"),
            LinearPosition::Value => attention("v"),
            LinearPosition::Intermediate => self.intermediate_lora,
            LinearPosition::Output => self.output_lora,
        }
    }
}

/// A linear layer with named LoRA/IA3 modules, the active setup, and at most one merged module.
///
/// Its parameters appear where the wrapped `Linear`'s would (`weight`, `bias`), with the
/// modules under `loras.<name>`, as in AdapterHub's `LoRALinear`. With no active module the
/// output is exactly the wrapped layer's.
#[derive(Debug, Clone)]
pub struct LinearSite {
    location: LinearLocation,
    linear: Linear,
    loras: NamedModules<LoRA>,
    active: Option<Arc<AdapterSetup>>,
    merged: Option<String>,
}

impl LinearSite {
    /// Wraps `linear` at `location`.
    pub fn new(linear: Linear, location: LinearLocation) -> Self {
        Self {
            location,
            linear,
            loras: NamedModules::default(),
            active: None,
            merged: None,
        }
    }

    /// Where this site sits.
    pub fn location(&self) -> LinearLocation {
        self.location
    }

    /// The wrapped layer (with a merged module folded in, if any).
    pub fn linear(&self) -> &Linear {
        &self.linear
    }

    /// Gives back the wrapped layer, first undoing any merge.
    pub fn into_linear(mut self) -> Linear {
        self.reset();
        self.linear
    }

    /// `(d_input, d_output)` of the wrapped layer.
    pub fn dims(&self) -> (usize, usize) {
        let [d_input, d_output] = self.linear.weight.lazy_shape().dims();
        (d_input, d_output)
    }

    /// The modules held here.
    pub fn loras(&self) -> &NamedModules<LoRA> {
        &self.loras
    }

    /// The LoRA config `config` places at this site, if any.
    pub fn placed<'a>(&self, config: &'a AdapterConfig) -> Option<&'a LoRAConfig> {
        config.lora().filter(|lora| lora.places_at(self.location))
    }

    /// Stores a ready-made module under `name`.
    pub fn insert_lora(&mut self, name: &str, lora: LoRA) {
        self.loras.insert(name, lora);
    }

    /// Removes the module `name` (undoing its merge first), if present here.
    pub fn delete_lora(&mut self, name: &str) -> Option<LoRA> {
        if self.merged.as_deref() == Some(name) {
            self.reset();
        }
        self.loras.remove(name)
    }

    /// Sets the active setup (`None` deactivates).
    pub fn set_active(&mut self, active: Option<Arc<AdapterSetup>>) {
        self.active = active;
    }

    /// The module folded into the weights, if any.
    pub fn merged(&self) -> Option<&str> {
        self.merged.as_deref()
    }

    /// Folds module `name` into the weights (a no-op if it is not held here or already merged).
    pub fn merge(&mut self, name: &str) -> Result<()> {
        let Some(lora) = self.loras.get(name) else {
            return Ok(());
        };
        match self.merged.as_deref() {
            Some(merged) if merged == name => return Ok(()),
            Some(merged) => {
                return Err(Error::InvalidSetup(format!(
                    "`{merged}` is already merged at {}; reset it before merging `{name}`",
                    self.location
                )));
            }
            None => {}
        }
        self.linear = lora.merge_into(self.linear.clone())?;
        self.merged = Some(name.to_string());
        Ok(())
    }

    /// Undoes the merge, if any.
    pub fn reset(&mut self) {
        if let Some(name) = self.merged.take()
            && let Some(lora) = self.loras.get(&name)
        {
            self.linear = lora.unmerge_from(self.linear.clone());
        }
    }

    /// The module `name`, unless it is absent or merged into the weights.
    fn unmerged(&self, name: &str) -> Option<&LoRA> {
        if self.merged.as_deref() == Some(name) {
            return None;
        }
        self.loras.get(name)
    }

    /// The wrapped layer's output, adapted by the active modules.
    ///
    /// Composition follows AdapterHub's `LoRALinear`: in a `Stack` each module takes the
    /// previous one's contribution as its input and the last one combines the result with the
    /// layer output; `Average` weights the children's contributions; `Split`, `BatchSplit`,
    /// `Parallel` and `PerRow` give each slice its own setup. A merged module is already in the
    /// weights and is skipped.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, seq, d_input]`
    /// - output: `[batch, seq, d_output]`
    pub fn forward(&self, input: Tensor<3>) -> Tensor<3> {
        let Some(setup) = self
            .active
            .as_deref()
            .filter(|setup| setup.any_name(&|n| self.unmerged(n).is_some()))
        else {
            return self.linear.forward(input);
        };
        if !setup.has_row_blocks() {
            return self.run(setup, input);
        }
        run_row_groups(setup, vec![input], |setup, mut inputs| {
            self.run(setup, inputs.pop().expect("one input"))
        })
    }

    fn run(&self, setup: &AdapterSetup, input: Tensor<3>) -> Tensor<3> {
        if let AdapterSetup::Split { children, splits } = setup {
            // Each slice of the sequence runs its own child.
            let [_, seq, _] = input.dims();
            let mut start = 0;
            let mut pieces = Vec::new();
            for (child, len) in children.iter().zip(splits) {
                let len = (*len).min(seq - start);
                if len > 0 {
                    pieces.push(self.run(child, input.clone().narrow(1, start, len)));
                    start += len;
                }
            }
            if start < seq {
                pieces.push(self.linear.forward(input.narrow(1, start, seq - start)));
            }
            return Tensor::cat(pieces, 1);
        }
        let (delta, last) = self.compose(setup, None, &input);
        let output = self.linear.forward(input);
        match (delta, last) {
            (Some(delta), Some(last)) => last.combine(output, delta),
            _ => output,
        }
    }

    /// The contribution of `setup` given the contribution so far, and the module that produced
    /// it last.
    fn compose<'a>(
        &'a self,
        setup: &AdapterSetup,
        previous: Option<Tensor<3>>,
        input: &Tensor<3>,
    ) -> (Option<Tensor<3>>, Option<&'a LoRA>) {
        match setup {
            AdapterSetup::Name(name) => match self.unmerged(name) {
                Some(lora) => (Some(lora.delta(previous, input)), Some(lora)),
                None => (previous, None),
            },
            AdapterSetup::Stack(children) => {
                let (mut delta, mut last) = (previous, None);
                for child in children {
                    let (d, l) = self.compose(child, delta, input);
                    delta = d;
                    last = l.or(last);
                }
                (delta, last)
            }
            AdapterSetup::Average {
                children,
                weights,
                normalize_weights,
            } => {
                let total: f64 = if *normalize_weights {
                    weights.iter().sum()
                } else {
                    1.0
                };
                let mut sum: Option<Tensor<3>> = None;
                let mut last = None;
                for (child, weight) in children.iter().zip(weights) {
                    if let (Some(delta), Some(l)) = self.compose(child, previous.clone(), input) {
                        let term = delta.mul_scalar(weight / total);
                        sum = Some(match sum {
                            Some(sum) => sum + term,
                            None => term,
                        });
                        last = Some(l);
                    }
                }
                match sum {
                    Some(sum) => (Some(sum), last),
                    None => (previous, None),
                }
            }
            // Fuse mixes bottleneck adapters (LoRA-family members are refused when activating);
            // Split is handled by `run`, row blocks by `forward`.
            _ => (previous, None),
        }
    }
}

const LORAS: &str = "loras";
const CONTAINER: &str = "LinearSite";

impl Module for LinearSite {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.loras
            .collect_devices(self.linear.collect_devices(devices))
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            linear: self.linear.fork(device),
            loras: self.loras.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            linear: self.linear.to_device(device),
            loras: self.loras.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            linear: self.linear.train(),
            loras: self.loras.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            location: self.location,
            linear: self.linear.valid(),
            loras: self.loras.valid(),
            active: self.active.clone(),
            merged: self.merged.clone(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            linear: self.linear.materialize(),
            loras: self.loras.materialize(),
            ..self
        }
    }

    // The wrapped layer's parameters appear directly under the site (`query.weight`), so
    // checkpoints of the plain model load unchanged; the modules sit under `loras`.
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.linear.visit(visitor);
        if !self.loras.is_empty() {
            visitor.enter_module(LORAS, CONTAINER);
            self.loras.visit(visitor);
            visitor.exit_module(LORAS, CONTAINER);
        }
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        let linear = self.linear.map(mapper);
        let loras = if self.loras.is_empty() {
            self.loras
        } else {
            mapper.enter_module(LORAS, CONTAINER);
            let loras = self.loras.map(mapper);
            mapper.exit_module(LORAS, CONTAINER);
            loras
        };
        Self {
            linear,
            loras,
            ..self
        }
    }
}

impl ModuleDisplayDefault for LinearSite {
    fn content(&self, content: Content) -> Option<Content> {
        let content = self.linear.content(content)?;
        if self.loras.is_empty() {
            Some(content)
        } else {
            Some(content.add(LORAS, &self.loras))
        }
    }
}

impl ModuleDisplay for LinearSite {}
