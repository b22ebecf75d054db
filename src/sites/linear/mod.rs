//! The linear site: a drop-in for burn's `Linear` that carries named LoRA/IA3 modules.

mod program;
mod share;

use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::NamedModules;
use super::rows::run_row_groups;
use crate::composition::ActivePlan;
use crate::config::LinearLocation;
use crate::error::{Error, Result};
use crate::methods::{LoRA, SharedFactors};
use program::{Modules, Program, Runner};

/// A linear layer with named LoRA/IA3 modules, at most one of them merged into its weights, and
/// what the active setup runs here.
///
/// Its parameters appear where the wrapped `Linear`'s would (`weight`, `bias`), with the
/// modules under `loras.<name>`, as in AdapterHub's `LoRALinear`. With no active module the
/// output is exactly the wrapped layer's.
#[derive(Debug, Clone)]
pub struct LinearSite {
    location: LinearLocation,
    linear: Linear,
    loras: NamedModules<LoRA>,
    /// Factors MTL-LoRA modules share, by share key (AdapterHub's `shared_parameters`).
    shared: NamedModules<SharedFactors>,
    merged: Option<String>,
    /// The norm a merged DoRA module's reset needs (see [`LoRA::with_magnitude`]).
    merged_norm: Option<Tensor<2>>,
    /// The active setup, shared by every site of the host.
    plan: Option<Arc<ActivePlan>>,
    /// What each of the plan's variants runs here; `None` when none runs a module here.
    programs: Option<Arc<[Option<Program>]>>,
}

impl LinearSite {
    /// Wraps `linear` at `location`.
    pub fn new(linear: Linear, location: LinearLocation) -> Self {
        Self {
            location,
            linear,
            loras: NamedModules::default(),
            shared: NamedModules::default(),
            merged: None,
            merged_norm: None,
            plan: None,
            programs: None,
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

    /// The wrapped layer's weight without the merged module, if any, `[d_input, d_output]`.
    pub fn unmerged_weight(&self) -> Tensor<2> {
        match &self.merged {
            Some(_) => self.clone().into_linear().weight.val(),
            None => self.linear.weight.val(),
        }
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

    /// The factors MTL-LoRA modules share here, by share key.
    pub fn shared(&self) -> &NamedModules<SharedFactors> {
        &self.shared
    }

    /// The factors `lora` shares, if it shares any.
    pub fn shared_of(&self, lora: &LoRA) -> Option<&SharedFactors> {
        shared_of(&self.shared, lora)
    }

    /// The module folded into the weights, if any.
    pub fn merged(&self) -> Option<&str> {
        self.merged.as_deref()
    }

    /// Stores `lora` under `name`; a PiSSA/OLoRA module takes its start out of the weights.
    pub(crate) fn insert_lora(&mut self, name: &str, lora: LoRA) {
        if lora.initial.is_some() {
            self.change_unmerged(|linear| lora.take_start_from(linear));
        }
        self.loras.insert(name.to_string(), lora);
        self.compile();
    }

    /// Removes the module `name` (undoing its merge first, and giving a PiSSA/OLoRA module's
    /// start back to the weights), if present here.
    pub(crate) fn remove_lora(&mut self, name: &str) {
        if self.merged.as_deref() == Some(name) {
            self.reset();
        }
        if let Some(lora) = self.loras.remove(name) {
            if lora.initial.is_some() {
                self.change_unmerged(|linear| lora.give_start_back(linear));
            }
            self.drop_unused_shares();
            self.compile();
        }
    }

    /// Applies `change` to the wrapped layer without the merged module, which is merged again
    /// afterwards.
    fn change_unmerged(&mut self, change: impl FnOnce(Linear) -> Linear) {
        let merged = self.merged.clone();
        self.reset();
        self.linear = change(self.linear.clone());
        if let Some(name) = merged {
            // Cannot fail: nothing is merged after the reset, and the module is still here.
            let _ = self.merge(&name);
        }
    }

    /// Activates `plan` (`None` deactivates).
    pub(crate) fn set_plan(&mut self, plan: Option<Arc<ActivePlan>>) {
        self.plan = plan;
        self.compile();
    }

    /// Replaces every module by `f(name, module)`; `f` must keep their structure.
    pub(crate) fn map_loras(&mut self, f: impl Fn(&String, LoRA) -> LoRA) {
        let loras = std::mem::take(&mut self.loras);
        self.loras = loras.map_entries(f);
    }

    /// Folds module `name` into the weights (a no-op if it is not held here or already merged).
    /// The caller checked it with [`LoRA::check_mergeable`].
    pub(crate) fn merge(&mut self, name: &str) -> Result<()> {
        let Some(lora) = self.loras.get(name) else {
            return Ok(());
        };
        match self.merged.as_deref() {
            Some(merged) if merged == name => return Ok(()),
            Some(merged) => {
                return Err(Error::NotMergeable {
                    name: name.to_string(),
                    reason: format!("`{merged}` is already merged at {}", self.location),
                });
            }
            None => {}
        }
        let (linear, norm) = lora.merge_into(self.linear.clone(), self.shared_of(lora));
        self.linear = linear;
        self.merged_norm = norm;
        self.merged = Some(name.to_string());
        self.compile();
        Ok(())
    }

    /// Undoes the merge, if any.
    pub(crate) fn reset(&mut self) {
        if let Some(name) = self.merged.take() {
            let norm = self.merged_norm.take();
            if let Some(lora) = self.loras.get(name.as_str()) {
                self.linear = lora.unmerge_from(self.linear.clone(), self.shared_of(lora), norm);
            }
            self.compile();
        }
    }

    /// Resolves the active plan's variants against the unmerged modules held here.
    fn compile(&mut self) {
        let modules = Modules {
            loras: &self.loras,
            merged: self.merged.as_deref(),
        };
        let layer = self.location.layer;
        let plan = self.plan.as_ref().filter(|plan| !plan.skips(layer));
        self.programs = plan.and_then(|plan| {
            let programs: Arc<[Option<Program>]> =
                plan.variants().iter().map(|v| modules.compile(v)).collect();
            programs.iter().any(Option::is_some).then_some(programs)
        });
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
        let (Some(plan), Some(programs)) = (&self.plan, &self.programs) else {
            return self.linear.forward(input);
        };
        let runner = Runner {
            loras: &self.loras,
            shared: &self.shared,
            linear: &self.linear,
        };
        let run = |variant: usize, [input]: [Tensor<3>; 1]| match &programs[variant] {
            Some(program) => runner.run(program, input),
            None => self.linear.forward(input),
        };
        if !plan.routes_rows() {
            return run(0, [input]);
        }
        let [batch, _, _] = input.dims();
        run_row_groups(&plan.routing(batch), [input], run)
    }
}

/// The factors in `shared` that `lora` shares, if it shares any.
fn shared_of<'a>(
    shared: &'a NamedModules<SharedFactors>,
    lora: &LoRA,
) -> Option<&'a SharedFactors> {
    lora.shared.as_deref().and_then(|key| shared.get(key))
}

const LORAS: &str = "loras";
const SHARED: &str = "shared_parameters";
const CONTAINER: &str = "LinearSite";

impl Module for LinearSite {
    fn collect_devices(&self, devices: Devices) -> Devices {
        let devices = self.linear.collect_devices(devices);
        self.shared
            .collect_devices(self.loras.collect_devices(devices))
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            merged_norm: self.merged_norm.map(|norm| norm.to_device(device)),
            linear: self.linear.fork(device),
            loras: self.loras.fork(device),
            shared: self.shared.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            merged_norm: self.merged_norm.map(|norm| norm.to_device(device)),
            linear: self.linear.to_device(device),
            loras: self.loras.to_device(device),
            shared: self.shared.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            merged_norm: self.merged_norm.map(Tensor::from_inner),
            linear: self.linear.train(),
            loras: self.loras.train(),
            shared: self.shared.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            location: self.location,
            linear: self.linear.valid(),
            loras: self.loras.valid(),
            shared: self.shared.valid(),
            merged: self.merged.clone(),
            merged_norm: self.merged_norm.clone().map(Tensor::without_autodiff),
            plan: self.plan.clone(),
            programs: self.programs.clone(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            linear: self.linear.materialize(),
            loras: self.loras.materialize(),
            shared: self.shared.materialize(),
            ..self
        }
    }

    // The wrapped layer's parameters appear directly under the site (`query.weight`), so
    // checkpoints of the plain model load unchanged; the modules sit under `loras`.
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.linear.visit(visitor);
        visit_field(visitor, LORAS, &self.loras);
        visit_field(visitor, SHARED, &self.shared);
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self {
            linear: self.linear.map(mapper),
            loras: map_field(mapper, LORAS, self.loras),
            shared: map_field(mapper, SHARED, self.shared),
            ..self
        }
    }
}

/// Visits a non-empty container under `field`.
fn visit_field<T: Module, V: ModuleVisitor>(
    visitor: &mut V,
    field: &str,
    modules: &NamedModules<T>,
) {
    if !modules.is_empty() {
        visitor.enter_module(field, CONTAINER);
        modules.visit(visitor);
        visitor.exit_module(field, CONTAINER);
    }
}

/// Maps a non-empty container under `field`.
fn map_field<T: Module, M: ModuleMapper>(
    mapper: &mut M,
    field: &str,
    modules: NamedModules<T>,
) -> NamedModules<T> {
    if modules.is_empty() {
        return modules;
    }
    mapper.enter_module(field, CONTAINER);
    let modules = modules.map(mapper);
    mapper.exit_module(field, CONTAINER);
    modules
}

impl ModuleDisplayDefault for LinearSite {
    fn content(&self, content: Content) -> Option<Content> {
        let mut content = self.linear.content(content)?;
        if !self.loras.is_empty() {
            content = content.add(LORAS, &self.loras);
        }
        if !self.shared.is_empty() {
            content = content.add(SHARED, &self.shared);
        }
        Some(content)
    }
}

impl ModuleDisplay for LinearSite {}
