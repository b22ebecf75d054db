//! A keyed container of modules whose parameters appear under their keys.

use std::fmt::{Debug, Display};

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::Device;

/// Modules keyed by name (adapter names; [`FusionKey`](crate::names::FusionKey)s for fusion
/// layers), in insertion order.
///
/// burn's derive does not support maps, so this implements [`Module`] by hand: each entry is
/// visited as a sub-module named after its key, which gives paths such as
/// `adapters.sst.up.weight`. The model API fills and empties it; hosts create it empty
/// (`NamedModules::default()`).
#[derive(Debug, Clone)]
pub struct NamedModules<M, K = String> {
    entries: Vec<(K, M)>,
}

impl<M, K> Default for NamedModules<M, K> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<M, K: PartialEq> NamedModules<M, K> {
    /// The module registered under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&M>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        self.position(key).is_some()
    }

    /// `(key, module)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &M)> {
        self.entries.iter().map(|(k, m)| (k, m))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of `key` in insertion order.
    pub(crate) fn position<Q>(&self, key: &Q) -> Option<usize>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        self.entries.iter().position(|(k, _)| k == key)
    }

    /// The key and module at `index`.
    pub(crate) fn entry(&self, index: usize) -> (&K, &M) {
        let (key, module) = &self.entries[index];
        (key, module)
    }

    /// The module at `index` (from [`NamedModules::position`]).
    pub(crate) fn at(&self, index: usize) -> &M {
        &self.entries[index].1
    }

    /// Inserts or replaces `key`.
    pub(crate) fn insert(&mut self, key: K, module: M) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = module,
            None => self.entries.push((key, module)),
        }
    }

    /// Removes and returns `key`.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<M>
    where
        K: PartialEq<Q>,
        Q: ?Sized,
    {
        let index = self.position(key)?;
        Some(self.entries.remove(index).1)
    }

    /// Replaces every module by `f(key, module)`.
    pub(crate) fn map_entries(self, mut f: impl FnMut(&K, M) -> M) -> Self {
        Self {
            entries: self
                .entries
                .into_iter()
                .map(|(key, m)| {
                    let m = f(&key, m);
                    (key, m)
                })
                .collect(),
        }
    }
}

/// The container type named modules are visited under.
pub(crate) const NAMED_MODULES: &str = "NamedModules";
const CONTAINER: &str = NAMED_MODULES;

impl<M, K> Module for NamedModules<M, K>
where
    M: Module,
    K: Clone + Debug + Display + PartialEq + Send,
{
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
                .map(|(k, m)| (k.clone(), m.valid()))
                .collect(),
        }
    }

    fn materialize(self) -> Self {
        self.map_entries(|_, m| m.materialize())
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        for (key, module) in &self.entries {
            let name = key.to_string();
            visitor.enter_module(&name, CONTAINER);
            module.visit(visitor);
            visitor.exit_module(&name, CONTAINER);
        }
    }

    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        self.map_entries(|key, m| {
            let name = key.to_string();
            mapper.enter_module(&name, CONTAINER);
            let m = m.map(mapper);
            mapper.exit_module(&name, CONTAINER);
            m
        })
    }
}

impl<M, K> ModuleDisplayDefault for NamedModules<M, K>
where
    M: ModuleDisplay,
    K: Clone + Debug + Display + PartialEq + Send,
{
    fn content(&self, content: Content) -> Option<Content> {
        self.entries
            .iter()
            .fold(content, |acc, (key, module)| {
                acc.add(&key.to_string(), module)
            })
            .set_top_level_type(CONTAINER)
            .optional()
    }
}

impl<M, K> ModuleDisplay for NamedModules<M, K>
where
    M: ModuleDisplay,
    K: Clone + Debug + Display + PartialEq + Send,
{
}
