//! Writing a host as a Hugging Face model directory (`config.json` + `model.safetensors`): its
//! base weights only, with whatever adapter is merged into them, under transformers' names.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{KeyRemapper, ModuleAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::Tensor;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::tensors::write_atomically;

/// The paths of the base model's parameters: every adapter module, fusion layer, head,
/// prompt, prefix and intervention a host holds sits in a [`NamedModules`] container, and no
/// base parameter does.
///
/// [`NamedModules`]: crate::sites::NamedModules
struct BaseParameters {
    path: Vec<String>,
    /// For each module entered, whether it is a named-module container.
    named: Vec<bool>,
    found: Vec<String>,
}

impl ModuleVisitor for BaseParameters {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.named
            .push(container_type == crate::sites::NAMED_MODULES);
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.named.pop();
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        if !self.named.contains(&true) {
            self.found.push(self.path.join("."));
        }
    }
}

fn base_parameters<M: Module>(model: &M) -> Vec<String> {
    let mut visitor = BaseParameters {
        path: Vec::new(),
        named: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut visitor);
    // The store matches norms' parameters under torch's names (`weight`/`bias`) once adapted.
    let torch_names: Vec<String> = visitor
        .found
        .iter()
        .filter_map(|path| {
            let (module, field) = path.rsplit_once('.')?;
            let torch = match field {
                "gamma" => "weight",
                "beta" => "bias",
                _ => return None,
            };
            Some(format!("{module}.{torch}"))
        })
        .collect();
    visitor.found.extend(torch_names);
    visitor.found
}

/// Writes `model`'s base weights and `config` into `dir` atomically (a reader never sees a
/// half-written file), renamed by `patterns` (burn path → transformers key, regexes applied in
/// order) and laid out by `adapter` (e.g. burn's `[in, out]` → torch's `[out, in]` for a
/// `Linear`). Fails if a file cannot be written.
pub(crate) fn write_pretrained<M: Module>(
    model: &M,
    dir: &Path,
    config: Value,
    patterns: &[(&str, &str)],
    adapter: impl ModuleAdapter + 'static,
) -> Result<()> {
    let mut remap = KeyRemapper::new();
    for (pattern, replacement) in patterns {
        remap = remap
            .add_pattern(*pattern, *replacement)
            .expect("constant patterns are valid regexes");
    }
    // transformers reads only files whose metadata says they hold torch tensors.
    let mut store = SafetensorsStore::from_bytes(None)
        .clear_metadata()
        .metadata("format", "pt")
        .with_full_paths(base_parameters(model))
        .remap(remap)
        .with_to_adapter(adapter);
    let weights = dir.join("model.safetensors");
    model
        .save_into(&mut store)
        .map_err(|e| Error::format(&weights, e.to_string()))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| Error::format(&weights, e.to_string()))?;
    let config = serde_json::to_vec_pretty(&config).expect("a JSON value serialises");
    write_atomically(
        dir,
        &[("model.safetensors", bytes), ("config.json", config)],
    )
}

/// `config` (a host's config serialised) with transformers' `model_type` and `architectures`,
/// without the fields it leaves unset.
pub(crate) fn hf_config(
    config: impl serde::Serialize,
    model_type: &str,
    architecture: &str,
) -> Value {
    let mut value = serde_json::to_value(config).expect("host configs serialise");
    if let Value::Object(map) = &mut value {
        // An absent field takes transformers' default; a `null` one would override it.
        map.retain(|_, field| !field.is_null());
        map.insert("model_type".into(), model_type.into());
        map.insert("architectures".into(), serde_json::json!([architecture]));
        map.insert("torch_dtype".into(), "float32".into());
    }
    value
}
