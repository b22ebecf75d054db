//! Path-aware freezing: which parameters train under `train_adapter`.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

/// Sets `require_grad` on every float parameter from its path.
struct PathTrainability<'a, F: Fn(&[String]) -> bool> {
    path: Vec<String>,
    trainable: &'a F,
}

impl<F: Fn(&[String]) -> bool> ModuleMapper for PathTrainability<'_, F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // A parameter not yet initialised shares its lazy initialiser, and with it the
        // gradient requirement, with every clone of the model: setting it here would reach
        // them all. Initialising it first (once, for every clone) keeps the setting local.
        let _ = param.val();
        param.set_require_grad((self.trainable)(&self.path))
    }
}

/// Whether `path` lies inside the adapter or head called `name`.
pub(crate) fn belongs_to(path: &[String], name: &str) -> bool {
    belongs_to_adapter(path, name) || path.windows(2).any(|w| w[0] == "heads" && w[1] == name)
}

/// Whether `path` lies inside the adapter called `name`: a segment `adapters` (or `*_adapters`,
/// or a linear site's `loras`) followed by `name`.
pub(crate) fn belongs_to_adapter(path: &[String], name: &str) -> bool {
    path.windows(2).any(|w| {
        (w[0] == "adapters" || w[0].ends_with("_adapters") || w[0] == "loras") && w[1] == name
    })
}

fn remap<M: Module>(model: &mut M, trainable: impl Fn(&[String]) -> bool) {
    let mut mapper = PathTrainability {
        path: Vec::new(),
        trainable: &trainable,
    };
    // Module maps consume the module; parameters are reference-counted, so the clone is shallow.
    *model = model.clone().map(&mut mapper);
}

/// Only the parameters of the named adapters/heads require gradients.
pub(crate) fn set_trainable<M: Module>(model: &mut M, names: &[String]) {
    remap(model, |path| {
        names.iter().any(|name| belongs_to(path, name))
    });
}

/// Every parameter requires gradients (`true`) or none does.
pub(crate) fn set_trainable_all<M: Module>(model: &mut M, trainable: bool) {
    remap(model, |_| trainable);
}
