//! The model-level adapter API, written once for every [`AdapterHost`].

mod freeze;
mod host;
mod summary;

pub use host::*;
pub use summary::*;

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;

use crate::composition::AdapterSetup;
use crate::config::AdapterConfig;
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::methods::Bottleneck;

/// Names and configs of a model's adapters, and its active setup. Hosts store one in a
/// `#[module(skip)]` field.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    adapters: Vec<(String, AdapterConfig)>,
    active: Option<AdapterSetup>,
    /// Configured trainability, kept here because burn only reports the effective state (always
    /// "no gradients" on a device without autodiff).
    trainable: Trainability,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Trainability {
    base: bool,
    adapters: Vec<String>,
}

impl Default for AdapterRegistry {
    fn default() -> Self {
        Self {
            adapters: Vec::new(),
            active: None,
            trainable: Trainability {
                base: true,
                adapters: Vec::new(),
            },
        }
    }
}

impl AdapterRegistry {
    /// The config of adapter `name`.
    pub fn config(&self, name: &str) -> Option<&AdapterConfig> {
        self.adapters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// Adapter names in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.adapters.iter().map(|(n, _)| n.as_str())
    }

    /// The active setup.
    pub fn active(&self) -> Option<&AdapterSetup> {
        self.active.as_ref()
    }

    /// Whether adapter `name` is configured to train (set by `add_adapter`, `train_adapter` and
    /// `freeze_model`).
    pub fn is_trainable(&self, name: &str) -> bool {
        self.trainable.adapters.iter().any(|n| n == name)
    }

    /// Whether the base model's parameters are configured to train.
    pub fn is_base_trainable(&self) -> bool {
        self.trainable.base
    }
}

/// Options of [`AdapterModel::add_adapter_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddAdapterOptions {
    /// Replace an existing adapter of the same name instead of failing.
    pub overwrite_ok: bool,
    /// Activate the new adapter.
    pub set_active: bool,
}

/// Characters that would break parameter paths, config strings or the composition text form.
const FORBIDDEN_IN_NAMES: &[char] = &['.', ',', '[', ']', '(', ')', '|', '=', '/', '\\'];

/// Checks that `name` can be used as an adapter name.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("names must not be empty".into()));
    }
    match name
        .chars()
        .find(|c| FORBIDDEN_IN_NAMES.contains(c) || c.is_whitespace())
    {
        Some(c) => Err(invalid(format!("names must not contain {c:?}"))),
        None => Ok(()),
    }
}

/// The AdapterHub model API, available on every [`AdapterHost`].
///
/// ```
/// use burn::tensor::Device;
/// use burn_adapters::prelude::*;
/// use burn_adapters::models::bert::{BertConfig, BertModel};
///
/// let device = Device::flex();
/// let mut model = BertModel::new(&BertConfig::tiny(), &device);
/// model.add_adapter("sst", AdapterConfig::load("pfeiffer[reduction_factor=8]")?)?;
/// model.train_adapter("sst")?;
/// assert_eq!(model.active_adapters().map(|s| s.to_string()), Some("sst".into()));
/// println!("{}", model.adapter_summary());
/// # Ok::<(), burn_adapters::Error>(())
/// ```
pub trait AdapterModel: AdapterHost {
    /// Adds a new adapter `name` with `config` at every site the config places it.
    ///
    /// Fails without changing the model if the name exists, is invalid, or the config is invalid
    /// for this model (e.g. `leave_out` beyond the last layer).
    fn add_adapter(&mut self, name: &str, config: impl Into<AdapterConfig>) -> Result<()> {
        self.add_adapter_with(name, config, AddAdapterOptions::default())
    }

    /// [`AdapterModel::add_adapter`] with AdapterHub's `overwrite_ok` and `set_active` options.
    fn add_adapter_with(
        &mut self,
        name: &str,
        config: impl Into<AdapterConfig>,
        options: AddAdapterOptions,
    ) -> Result<()> {
        let config = config.into();
        validate_name(name)?;
        if self.has_adapter(name) && !options.overwrite_ok {
            return Err(Error::DuplicateAdapter(name.to_string()));
        }
        config.validate()?;
        reject_unbuildable(&config)?;
        let layers = self.num_layers();
        if let Some(layer) = config.leave_out().into_iter().find(|l| *l >= layers) {
            return Err(Error::invalid(
                "leave_out",
                layer,
                format!("the model has layers 0..{layers}"),
            ));
        }
        let device = self.device()?;
        let hidden = self.hidden_size();
        // Build every module first so that a failure leaves the model untouched.
        let mut built: Vec<Option<Bottleneck>> = Vec::new();
        let mut failure = None;
        self.visit_sites(&mut |site| {
            if failure.is_some() {
                return;
            }
            let Some(bn) = site.placed(&config) else {
                built.push(None);
                return;
            };
            match Bottleneck::new(bn, hidden, site.location().layer, &device) {
                Ok(adapter) => built.push(Some(adapter)),
                Err(e) => failure = Some(e),
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if self.has_adapter(name) {
            self.delete_adapter(name)?;
        }
        self.install_adapter(name, config, built, None);
        if options.set_active {
            self.set_active_adapters(name)?;
        }
        Ok(())
    }

    /// Inserts modules built for each site (in [`AdapterHost::visit_sites`] order) under `name`,
    /// and a head of the same name if given.
    #[doc(hidden)]
    fn install_adapter(
        &mut self,
        name: &str,
        config: AdapterConfig,
        modules: Vec<Option<Bottleneck>>,
        head: Option<PredictionHead>,
    ) {
        let autodiff = self.device().is_ok_and(|d| d.is_autodiff());
        let mut modules = modules.into_iter();
        self.visit_sites_mut(&mut |site| {
            if let Some(Some(adapter)) = modules.next() {
                site.insert_adapter(name, match_autodiff(adapter, autodiff));
            }
        });
        if let (Some(head), Some(heads)) = (head, self.heads_mut()) {
            heads.insert(name, match_autodiff(head, autodiff));
        }
        let registry = self.registry_mut();
        registry.adapters.push((name.to_string(), config));
        // New parameters require gradients, as in PyTorch.
        registry.trainable.adapters.push(name.to_string());
        // Sites hold the active names; refresh them in case `name` is part of the active setup.
        let active = self.registry().active.clone();
        self.broadcast_active(active.as_ref());
    }

    /// Removes adapter `name` from every site; it leaves the active setup if it was part of it.
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        if !self.has_adapter(name) {
            return Err(Error::UnknownAdapter(name.to_string()));
        }
        self.visit_sites_mut(&mut |site| {
            site.delete_adapter(name);
        });
        let registry = self.registry_mut();
        registry.adapters.retain(|(n, _)| n != name);
        registry.trainable.adapters.retain(|n| n != name);
        if self
            .active_adapters()
            .is_some_and(|s| s.names().contains(&name))
        {
            self.deactivate_adapters();
        }
        Ok(())
    }

    /// Whether an adapter `name` exists.
    fn has_adapter(&self, name: &str) -> bool {
        self.registry().config(name).is_some()
    }

    /// Names of all adapters, in the order they were added.
    fn adapter_names(&self) -> Vec<String> {
        self.registry().names().map(str::to_string).collect()
    }

    /// The config adapter `name` was created with.
    fn adapter_config(&self, name: &str) -> Result<&AdapterConfig> {
        self.registry()
            .config(name)
            .ok_or_else(|| Error::UnknownAdapter(name.to_string()))
    }

    /// Activates `setup` (an adapter name or a composition) for the following forward passes.
    ///
    /// Fails, leaving the previous setup active, if it names an unknown adapter.
    fn set_active_adapters(&mut self, setup: impl Into<AdapterSetup>) -> Result<()> {
        let setup = setup.into();
        setup.validate()?;
        if let Some(missing) = setup.names().into_iter().find(|n| !self.has_adapter(n)) {
            return Err(Error::UnknownAdapter(missing.to_string()));
        }
        self.broadcast_active(Some(&setup));
        self.registry_mut().active = Some(setup);
        Ok(())
    }

    /// Deactivates all adapters: the model computes its base function again.
    fn deactivate_adapters(&mut self) {
        self.broadcast_active(None);
        self.registry_mut().active = None;
    }

    /// The active setup, if any.
    fn active_adapters(&self) -> Option<&AdapterSetup> {
        self.registry().active()
    }

    /// Prepares `setup` for training: freezes every parameter of the model, unfreezes the
    /// parameters of the named adapters (and heads of the same names), and activates `setup`.
    fn train_adapter(&mut self, setup: impl Into<AdapterSetup>) -> Result<()> {
        let setup = setup.into();
        self.set_active_adapters(setup.clone())?;
        let names: Vec<String> = setup.names().into_iter().map(str::to_string).collect();
        freeze::set_trainable(self, &names);
        self.registry_mut().trainable = Trainability {
            base: false,
            adapters: names,
        };
        Ok(())
    }

    /// Prepares head `name` for training over a frozen model (a linear probe): freezes every
    /// parameter except the head's (and those of an adapter of the same name, as
    /// `train_adapter` would); the active adapter setup is left as it is.
    fn train_head(&mut self, name: &str) -> Result<()> {
        if !self.has_head(name) {
            return Err(Error::UnknownHead(name.to_string()));
        }
        freeze::set_trainable(self, &[name.to_string()]);
        self.registry_mut().trainable = Trainability {
            base: false,
            adapters: Vec::new(),
        };
        Ok(())
    }

    /// Freezes (`true`) or unfreezes (`false`) every parameter of the model, adapters included.
    fn freeze_model(&mut self, freeze: bool) {
        freeze::set_trainable_all(self, !freeze);
        let adapters = if freeze {
            Vec::new()
        } else {
            self.adapter_names()
        };
        self.registry_mut().trainable = Trainability {
            base: !freeze,
            adapters,
        };
    }

    /// A table of the adapters: architecture, parameter count, share of the base model, active,
    /// trainable.
    fn adapter_summary(&self) -> AdapterSummary {
        summary::summarize(self)
    }

    /// Saves adapter `name` into `dir` as AdapterHub does: `adapter_config.json` and
    /// `adapter.safetensors` with AdapterHub's tensor names and torch layouts. The files are
    /// written to temporaries and renamed into place, so readers never see a partial adapter.
    fn save_adapter(&self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        crate::io::adapterhub::save_adapter(self, dir.as_ref(), name)
    }

    /// Saves every adapter into `dir/<name>/`.
    fn save_all_adapters(&self, dir: impl AsRef<Path>) -> Result<()> {
        for name in self.adapter_names() {
            self.save_adapter(dir.as_ref().join(&name), &name)?;
        }
        Ok(())
    }

    /// Loads the adapter saved in `dir` (by this library or by AdapterHub; `adapter.safetensors`
    /// or `pytorch_adapter.bin`) under the name it was saved with, and returns that name.
    ///
    /// Every file problem is a typed error naming the file and key; on any error the model is
    /// unchanged.
    fn load_adapter(&mut self, dir: impl AsRef<Path>) -> Result<String> {
        self.load_adapter_impl(dir.as_ref(), None)
    }

    /// [`AdapterModel::load_adapter`] under a new name.
    fn load_adapter_as(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<String> {
        self.load_adapter_impl(dir.as_ref(), Some(name))
    }

    /// Loads every adapter directory below `dir` (as written by
    /// [`AdapterModel::save_all_adapters`]), all or nothing. Returns the names, sorted.
    fn load_all_adapters(&mut self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let mut subdirs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            if path.join(crate::io::CONFIG_FILE).is_file() {
                subdirs.push(path);
            }
        }
        subdirs.sort();
        let mut candidate = self.clone();
        let names = subdirs
            .iter()
            .map(|sub| candidate.load_adapter(sub))
            .collect::<Result<Vec<_>>>()?;
        *self = candidate;
        Ok(names)
    }

    #[doc(hidden)]
    fn load_adapter_impl(&mut self, dir: &Path, load_as: Option<&str>) -> Result<String> {
        if let Some(name) = load_as {
            validate_name(name)?;
        }
        let device = self.device()?;
        let loaded = crate::io::adapterhub::read_adapter(self, dir, load_as, &device)?;
        validate_name(&loaded.name)?;
        if self.has_adapter(&loaded.name) {
            return Err(Error::DuplicateAdapter(loaded.name));
        }
        if loaded.head.is_some() && self.has_head(&loaded.name) {
            return Err(Error::DuplicateHead(loaded.name));
        }
        let name = loaded.name.clone();
        self.install_adapter(&name, loaded.config, loaded.modules, loaded.head);
        Ok(name)
    }

    /// Adds a prediction head `name` (see [`HeadConfig`]). A head named like an adapter trains
    /// with it under [`AdapterModel::train_adapter`] and is saved and loaded with it.
    fn add_head(&mut self, name: &str, config: HeadConfig) -> Result<()> {
        validate_name(name)?;
        if self.heads().is_none() {
            return Err(Error::Unsupported("prediction heads on this host".into()));
        }
        if self.has_head(name) {
            return Err(Error::DuplicateHead(name.to_string()));
        }
        let device = self.device()?;
        let head = PredictionHead::new(config, self.hidden_size(), self.head_dropout(), &device)?;
        let head = match_autodiff(head, device.is_autodiff());
        if let Some(heads) = self.heads_mut() {
            heads.insert(name, head);
        }
        Ok(())
    }

    /// Removes head `name`.
    fn delete_head(&mut self, name: &str) -> Result<()> {
        self.heads_mut()
            .and_then(|heads| heads.remove(name))
            .map(drop)
            .ok_or_else(|| Error::UnknownHead(name.to_string()))
    }

    /// Whether a head `name` exists.
    fn has_head(&self, name: &str) -> bool {
        self.heads().is_some_and(|heads| heads.contains(name))
    }

    /// The head `name`.
    fn head(&self, name: &str) -> Result<&PredictionHead> {
        self.heads()
            .and_then(|heads| heads.get(name))
            .ok_or_else(|| Error::UnknownHead(name.to_string()))
    }

    /// The device the model's parameters live on (new adapters are created there).
    #[doc(hidden)]
    fn device(&self) -> Result<Device> {
        self.devices().into_iter().next().ok_or_else(|| {
            Error::InvalidSetup(
                "the model has no parameters, so no device to create adapters on".into(),
            )
        })
    }

    #[doc(hidden)]
    fn broadcast_active(&mut self, setup: Option<&AdapterSetup>) {
        let names: Option<Arc<[String]>> = setup.map(|s| s.stacked_names().into());
        self.visit_sites_mut(&mut |site| site.set_active(names.clone()));
    }
}

impl<T: AdapterHost> AdapterModel for T {}

/// Configs whose methods have no sites in hosts yet.
pub(crate) fn reject_unbuildable(config: &AdapterConfig) -> Result<()> {
    match config.lora() {
        Some(_) => Err(Error::Unsupported(
            "LoRA/IA3 adapters in a model (the config parses; linear sites are not implemented yet)".into(),
        )),
        None => Ok(()),
    }
}

/// Puts a freshly built module in training mode when the model lives on an autodiff device, so
/// its parameters track gradients like the rest of the model.
fn match_autodiff<M: Module>(module: M, autodiff: bool) -> M {
    if autodiff { module.train() } else { module }
}
