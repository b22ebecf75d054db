//! Every float parameter of a module, by path, for bit-exact comparisons.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct Snapshot {
    path: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl ModuleVisitor for Snapshot {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        self.out.insert(self.path.join("."), values);
    }
}

pub fn snapshot<M: Module>(module: &M) -> BTreeMap<String, Vec<f32>> {
    let mut s = Snapshot {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut s);
    s.out
}

struct Trainable {
    path: Vec<String>,
    out: std::collections::BTreeSet<String>,
}

impl ModuleVisitor for Trainable {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.val().is_require_grad() {
            self.out.insert(self.path.join("."));
        }
    }
}

/// Paths of the parameters that would receive gradients.
pub fn trainable<M: Module>(module: &M) -> std::collections::BTreeSet<String> {
    let mut t = Trainable {
        path: Vec::new(),
        out: Default::default(),
    };
    module.visit(&mut t);
    t.out
}
