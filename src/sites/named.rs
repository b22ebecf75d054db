//! A name-keyed container of modules whose parameters appear under their names.

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::Device;

/// Modules keyed by adapter name, in insertion order.
///
/// burn's derive does not support maps, so this implements [`Module`] by hand: each entry is
/// visited as a sub-module named after its key, which gives paths such as
/// `adapters.sst.up.weight`.
#[derive(Debug, Clone)]
pub struct NamedModules<M> {
    entries: Vec<(String, M)>,
}

impl<M> Default for NamedModules<M> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<M> NamedModules<M> {
    /// The module registered under `name`.
    pub fn get(&self, name: &str) -> Option<&M> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Inserts or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, module: M) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = module,
            None => self.entries.push((name, module)),
        }
    }

    /// Removes and returns `name`.
    pub fn remove(&mut self, name: &str) -> Option<M> {
        let index = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(index).1)
    }

    /// `(name, module)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &M)> {
        self.entries.iter().map(|(n, m)| (n.as_str(), m))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn map_entries(self, mut f: impl FnMut(&str, M) -> M) -> Self {
        Self {
            entries: self
                .entries
                .into_iter()
                .map(|(name, m)| {
                    let m = f(&name, m);
                    (name, m)
                })
                .collect(),
        }
    }
}

const CONTAINER: &str = "NamedModules";

impl<M: Module> Module for NamedModules<M> {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.entries
            .iter()
            .fold(devices, |d, (_, m)| m.collect_devices(d))
    }

    fn fork(self, device: &Device) -> Self {
        self.map_entries(|_, m| m.fork(device))
    }

    fn to_device(self, device: &Device) -> Self {
        self.map_entries(|_, m| m.to_device(device))
    }

    fn train(self) -> Self {
        self.map_entries(|_, m| m.train())
    }

    fn valid(&self) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .map(|(n, m)| (n.clone(), m.valid()))
                .collect(),
        }
    }

    fn materialize(self) -> Self {
        self.map_entries(|_, m| m.materialize())
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        for (name, module) in &self.entries {
            visitor.enter_module(name, CONTAINER);
            module.visit(visitor);
            visitor.exit_module(name, CONTAINER);
        }
    }

    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        self.map_entries(|name, m| {
            mapper.enter_module(name, CONTAINER);
            let m = m.map(mapper);
            mapper.exit_module(name, CONTAINER);
            m
        })
    }
}

impl<M: ModuleDisplay> ModuleDisplayDefault for NamedModules<M> {
    fn content(&self, content: Content) -> Option<Content> {
        self.entries
            .iter()
            .fold(content, |acc, (name, module)| acc.add(name, module))
            .set_top_level_type(CONTAINER)
            .optional()
    }
}

impl<M: ModuleDisplay> ModuleDisplay for NamedModules<M> {}
