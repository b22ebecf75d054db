//! Moving parameters between modules and the tensors of files, through a naming rule
//! (`io::keys`): our parameter path inside a module ↔ AdapterHub's key and layout.

use std::collections::BTreeSet;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::io::WeightsFile;
use crate::io::keys::ReferenceName;
use crate::io::tensors::{HostTensor, TensorMap};

/// Maps a parameter path inside a module to its AdapterHub names.
pub(crate) type Naming<'a> = &'a dyn Fn(&str) -> Option<ReferenceName>;

/// Adds `module`'s parameters to `out` under `prefix.<name>`, in torch layout.
pub(crate) fn collect<M: Module>(
    module: &M,
    prefix: String,
    naming: Naming<'_>,
    out: &mut TensorMap,
) {
    module.visit(&mut Collect {
        path: Vec::new(),
        prefix,
        naming,
        out,
    });
}

struct Collect<'a> {
    path: Vec<String>,
    prefix: String,
    naming: Naming<'a>,
    out: &'a mut TensorMap,
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

/// Fills freshly built modules with the tensors of one file and checks, at the end, that every
/// tensor of the file was used.
pub(crate) struct Filler<'a> {
    file: &'a WeightsFile,
    device: &'a Device,
    used: BTreeSet<String>,
}

impl<'a> Filler<'a> {
    pub fn new(file: &'a WeightsFile, device: &'a Device) -> Self {
        Self {
            file,
            device,
            used: BTreeSet::new(),
        }
    }

    /// `module` with every parameter replaced by the file's tensor `prefix.<name>`, checking
    /// presence, shape and finiteness; or the first problem found.
    pub fn fill<M: Module>(&mut self, module: M, prefix: String, naming: Naming<'_>) -> Result<M> {
        let mut fill = Fill {
            path: Vec::new(),
            prefix,
            naming,
            filler: self,
            error: None,
        };
        let filled = module.map(&mut fill);
        match fill.error {
            Some(e) => Err(e),
            None => Ok(filled),
        }
    }

    /// Counts the file's tensors under `prefix.` as used without reading them.
    pub fn accept_under(&mut self, prefix: &str) {
        let under = format!("{prefix}.");
        let keys = self.file.tensors.keys().filter(|k| k.starts_with(&under));
        self.used.extend(keys.cloned());
    }

    /// Fails on the first tensor of the file no module used.
    pub fn finish(self) -> Result<()> {
        match self.file.tensors.keys().find(|k| !self.used.contains(*k)) {
            Some(key) => Err(Error::UnexpectedTensor {
                path: self.file.path.clone(),
                key: key.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Replaces one module's parameters (see [`Filler::fill`]).
struct Fill<'f, 'a> {
    path: Vec<String>,
    prefix: String,
    naming: Naming<'f>,
    filler: &'f mut Filler<'a>,
    error: Option<Error>,
}

impl Fill<'_, '_> {
    fn lookup(&mut self, path: &str, dims: &[usize]) -> Result<TensorData> {
        let name = (self.naming)(path).ok_or_else(|| {
            Error::Unsupported(format!("parameter `{path}` has no AdapterHub name"))
        })?;
        let keys: Vec<String> = name
            .names
            .iter()
            .map(|n| format!("{}.{n}", self.prefix))
            .collect();
        let file = self.filler.file;
        let found = keys
            .iter()
            .find(|k| file.tensors.contains_key(*k))
            .ok_or_else(|| Error::MissingTensor {
                path: file.path.clone(),
                key: keys[0].clone(),
            })?;
        for key in &keys {
            if file.tensors.contains_key(key) {
                self.filler.used.insert(key.clone());
            }
        }
        let tensor = &file.tensors[found];
        let mut expected = dims.to_vec();
        if name.transpose && dims.len() >= 2 {
            expected.swap(dims.len() - 2, dims.len() - 1);
        }
        if tensor.shape != expected || tensor.values.len() != expected.iter().product::<usize>() {
            return Err(Error::ShapeMismatch {
                path: file.path.clone(),
                key: found.clone(),
                expected,
                found: tensor.shape.clone(),
            });
        }
        if let Some(bad) = tensor.values.iter().find(|v| !v.is_finite()) {
            return Err(Error::format(
                &file.path,
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

impl ModuleMapper for Fill<'_, '_> {
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
                let device = self.filler.device.clone();
                param.map(|_| Tensor::from_data(data, &device))
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}
