//! Every float parameter of a module, by path, for bit-exact comparisons.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Calls `record(path, param)` for every float parameter.
struct Visit<F> {
    path: Vec<String>,
    record: F,
}

impl<F: FnMut(String, Tensor<1>, bool)> ModuleVisitor for Visit<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let trainable = value.is_require_grad();
        (self.record)(self.path.join("."), value.flatten(0, D - 1), trainable);
    }
}

fn visit<M: Module>(module: &M, record: impl FnMut(String, Tensor<1>, bool)) {
    module.visit(&mut Visit {
        path: Vec::new(),
        record,
    });
}

/// Every parameter's values.
pub fn snapshot<M: Module>(module: &M) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    visit(module, |path, value, _| {
        let values = value
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        out.insert(path, values);
    });
    out
}

/// Paths of the parameters that would receive gradients.
pub fn trainable<M: Module>(module: &M) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    visit(module, |path, _, trainable| {
        if trainable {
            out.insert(path);
        }
    });
    out
}
