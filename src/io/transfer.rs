//! Moving parameters between modules and named file tensors, through a naming rule.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::keys::ReferenceName;
use super::tensors::{HostTensor, TensorMap};
use crate::error::{Error, Result};

/// Maps a parameter path inside a module to its AdapterHub names.
pub(crate) type Naming<'a> = &'a dyn Fn(&str) -> Option<ReferenceName>;

/// Collects a module's parameters under `prefix.<name>`, in torch layout.
pub(crate) struct Collect<'a> {
    pub path: Vec<String>,
    pub prefix: String,
    pub naming: Naming<'a>,
    pub out: &'a mut TensorMap,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        let name = (self.naming)(&path)
            .unwrap_or_else(|| panic!("parameter `{path}` has no AdapterHub name"));
        let data = param.val().into_data().convert::<f32>();
        let tensor = HostTensor {
            shape: data.shape().to_vec(),
            values: data.try_to_vec::<f32>().expect("converted to f32"),
        };
        let tensor = if name.transpose {
            tensor.transposed()
        } else {
            tensor
        };
        for alias in name.names {
            self.out
                .insert(format!("{}.{alias}", self.prefix), tensor.clone());
        }
    }
}

/// Replaces a freshly built module's parameters by file tensors named `prefix.<name>`, checking
/// presence, shape and finiteness; records which file keys were used.
pub(crate) struct Fill<'a> {
    pub path: Vec<String>,
    pub prefix: String,
    pub naming: Naming<'a>,
    pub file: &'a Path,
    pub tensors: &'a TensorMap,
    pub used: &'a mut BTreeSet<String>,
    pub device: &'a Device,
    pub error: Option<Error>,
}

impl<'a> Fill<'a> {
    pub fn new(
        prefix: String,
        naming: Naming<'a>,
        file: &'a Path,
        tensors: &'a TensorMap,
        used: &'a mut BTreeSet<String>,
        device: &'a Device,
    ) -> Self {
        Self {
            path: Vec::new(),
            prefix,
            naming,
            file,
            tensors,
            used,
            device,
            error: None,
        }
    }

    /// `module` with every parameter replaced by its file tensor, or the first problem found.
    pub fn fill<M: burn::module::Module>(&mut self, module: M) -> Result<M> {
        let filled = module.map(self);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(filled),
        }
    }

    fn lookup(&mut self, path: &str, dims: &[usize]) -> Result<TensorData> {
        let name = (self.naming)(path).ok_or_else(|| {
            Error::Unsupported(format!("parameter `{path}` has no AdapterHub name"))
        })?;
        let keys: Vec<String> = name
            .names
            .iter()
            .map(|n| format!("{}.{n}", self.prefix))
            .collect();
        let found = keys
            .iter()
            .find(|k| self.tensors.contains_key(*k))
            .ok_or_else(|| Error::MissingTensor {
                path: self.file.to_path_buf(),
                key: keys[0].clone(),
            })?;
        for key in &keys {
            if self.tensors.contains_key(key) {
                self.used.insert(key.clone());
            }
        }
        let tensor = &self.tensors[found];
        let expected: Vec<usize> = if name.transpose {
            dims.iter().rev().copied().collect()
        } else {
            dims.to_vec()
        };
        if tensor.shape != expected || tensor.values.len() != expected.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                path: self.file.to_path_buf(),
                key: found.clone(),
                expected,
                found: tensor.shape.clone(),
            });
        }
        if let Some(bad) = tensor.values.iter().find(|v| !v.is_finite()) {
            return Err(Error::format(
                self.file,
                format!("tensor `{found}` holds a non-finite value ({bad})"),
            ));
        }
        let tensor = if name.transpose {
            tensor.transposed()
        } else {
            tensor.clone()
        };
        Ok(TensorData::new(tensor.values, tensor.shape))
    }
}

impl ModuleMapper for Fill<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        let dims = param.lazy_shape().to_vec();
        match self.lookup(&path, &dims) {
            Ok(data) => {
                let device = self.device.clone();
                param.map(|_| Tensor::from_data(data, &device))
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}
