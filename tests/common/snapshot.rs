//! Every float parameter of a module, by path, for bit-exact comparisons.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;

/// Calls `record(path, param)` for every float parameter.
struct Visit<F> {
    path: Vec<String>,
    record: F,
}

impl<F: FnMut(String, Tensor<1>, bool, &[usize])> ModuleVisitor for Visit<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let trainable = value.is_require_grad();
        let dims = value.dims();
        (self.record)(
            self.path.join("."),
            value.flatten(0, D - 1),
            trainable,
            &dims,
        );
    }
}

fn visit<M: Module>(module: &M, record: impl FnMut(String, Tensor<1>, bool, &[usize])) {
    module.visit(&mut Visit {
        path: Vec::new(),
        record,
    });
}

/// Every parameter's values.
pub fn snapshot<M: Module>(module: &M) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    visit(module, |path, value, _, _| {
        let values = value
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        out.insert(path, values);
    });
    out
}

/// Every parameter's shape.
#[allow(dead_code)]
pub fn shapes<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    visit(module, |path, _, _, dims| {
        out.insert(path, dims.to_vec());
    });
    out
}

/// Paths of the parameters that would receive gradients.
pub fn trainable<M: Module>(module: &M) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    visit(module, |path, _, trainable, _| {
        if trainable {
            out.insert(path);
        }
    });
    out
}

/// Everything observable about a model's adapters, to check that a failed call changed nothing.
#[derive(Debug, PartialEq)]
pub struct ModelState {
    pub params: BTreeMap<String, Vec<f32>>,
    pub trainable: BTreeSet<String>,
    pub adapters: Vec<String>,
    pub active: Option<String>,
    pub fusions: Vec<String>,
    pub heads: Vec<String>,
    pub summary: String,
    pub merged: Option<String>,
}

impl ModelState {
    pub fn of(model: &BertModel) -> Self {
        Self {
            params: snapshot(model),
            trainable: trainable(model),
            adapters: model.adapter_names(),
            active: model.active_adapters().map(|s| s.to_string()),
            fusions: model.registry().fusions().map(|k| k.to_string()).collect(),
            heads: model
                .heads()
                .map(|heads| heads.iter().map(|(name, _)| name.to_string()).collect())
                .unwrap_or_default(),
            summary: model.adapter_summary().to_string(),
            merged: model.merged_adapter().map(String::from),
        }
    }

    /// Panics, naming what differs, if `after` is not `self`.
    pub fn assert_unchanged(&self, after: &ModelState, error: &dyn std::fmt::Display) {
        if after == self {
            return;
        }
        let changed: Vec<_> = self
            .params
            .keys()
            .chain(after.params.keys())
            .filter(|k| self.params.get(*k) != after.params.get(*k))
            .take(5)
            .collect();
        panic!(
            "a failed call ({error}) changed the model: params {changed:?}, trainable flags changed: {}, adapters {:?} → {:?}, active {:?} → {:?}, fusions {:?} → {:?}, heads {:?} → {:?}, merged {:?} → {:?}",
            self.trainable != after.trainable,
            self.adapters,
            after.adapters,
            self.active,
            after.active,
            self.fusions,
            after.fusions,
            self.heads,
            after.heads,
            self.merged,
            after.merged
        );
    }
}
