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
use crate::config::{AdapterConfig, BnConfig, LoRAConfig};
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::methods::{Bottleneck, LoRA};

/// Names and configs of a model's adapters, and its active setup. Hosts store one in a
/// `#[module(skip)]` field.
#[derive(Debug, Clone)]
pub struct AdapterRegistry {
    adapters: Vec<(String, AdapterConfig)>,
    active: Option<AdapterSetup>,
    /// Configured trainability, kept here because burn only reports the effective state (always
    /// "no gradients" on a device without autodiff).
    trainable: Trainability,
    /// The LoRA/IA3 adapter folded into the weights.
    merged: Option<String>,
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
            merged: None,
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
        let layers = self.num_layers();
        if let Some(layer) = config.leave_out().into_iter().find(|l| *l >= layers) {
            return Err(Error::invalid(
                "leave_out",
                layer,
                format!("the model has layers 0..{layers}"),
            ));
        }
        // Build every module first so that a failure leaves the model untouched.
        let modules = build_modules(self, &config, None)?;
        if self.has_adapter(name) {
            self.delete_adapter(name)?;
        }
        install(self, name, config, modules, None);
        if options.set_active {
            self.set_active_adapters(name)?;
        }
        Ok(())
    }

    /// Removes adapter `name` from every site; it leaves the active setup if it was part of it.
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        if !self.has_adapter(name) {
            return Err(Error::UnknownAdapter(name.to_string()));
        }
        self.visit_sites_mut(&mut |site| {
            site.delete_adapter(name);
        });
        // A merged LoRA is taken out of the weights before it goes.
        self.visit_linear_sites_mut(&mut |site| {
            site.delete_lora(name);
        });
        let registry = self.registry_mut();
        if registry.merged.as_deref() == Some(name) {
            registry.merged = None;
        }
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
        if let Some(merged) = self.merged_adapter()
            && setup.names().contains(&merged)
        {
            return Err(Error::InvalidSetup(format!(
                "`{merged}` is merged into the weights; call `reset_adapter` before training it"
            )));
        }
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
        install(self, &name, loaded.config, loaded.modules, loaded.head);
        Ok(name)
    }

    /// Loads a Hugging Face PEFT LoRA (`adapter_config.json` with `peft_type: "LORA"` and
    /// `adapter_model.safetensors`) as adapter `name`.
    ///
    /// The wrapped modules must be ones AdapterHub's LoRA can describe (attention query, key,
    /// value and the feed-forward projections, the same in every layer not left out); PEFT's
    /// `lora_alpha / r` and rsLoRA's `lora_alpha / √r` scaling carry over exactly. On any error
    /// the model is unchanged.
    fn load_peft_adapter(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        validate_name(name)?;
        if self.has_adapter(name) {
            return Err(Error::DuplicateAdapter(name.to_string()));
        }
        let loaded = crate::io::peft::read_peft(self, dir.as_ref())?;
        install(self, name, loaded.config, loaded.modules, None);
        Ok(())
    }

    /// Saves LoRA adapter `name` in Hugging Face PEFT's format, loadable with
    /// `PeftModel.from_pretrained` on the same base model. Gated LoRA, IA3 and unions have no
    /// PEFT LoRA equivalent and are refused.
    fn save_peft_adapter(&self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        crate::io::peft::save_peft(self, dir.as_ref(), name)
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
        self.visit_linear_sites_mut(&mut |site| site.set_active(names.clone()));
    }

    /// Folds LoRA/IA3 adapter `name` into the weights of the layers it wraps, so that inference
    /// costs nothing extra (AdapterHub's `merge_adapter`). While merged, the adapter is not
    /// applied again on top of its merged weights; other active LoRAs still are.
    ///
    /// Fails without changing the model if `name` is unknown, has no LoRA/IA3 part, is gated
    /// (its update depends on the input), or another adapter is merged already.
    fn merge_adapter(&mut self, name: &str) -> Result<()> {
        let config = self.adapter_config(name)?;
        let not_mergeable = |reason: String| Error::NotMergeable {
            name: name.to_string(),
            reason,
        };
        if config.lora().is_none() {
            return Err(not_mergeable(format!(
                "it is a `{}` adapter; only LoRA and IA3 fold into weights",
                config.architecture()
            )));
        }
        if let Some(merged) = self.merged_adapter() {
            if merged == name {
                return Ok(());
            }
            return Err(not_mergeable(format!(
                "`{merged}` is merged already; call `reset_adapter` first"
            )));
        }
        let mut problem = None;
        self.visit_linear_sites(&mut |site| {
            if let Some(Err(e)) = site.loras().get(name).map(|lora| lora.check_mergeable()) {
                problem.get_or_insert(e.to_string());
            }
        });
        if let Some(reason) = problem {
            return Err(not_mergeable(reason));
        }
        let mut failure = None;
        self.visit_linear_sites_mut(&mut |site| {
            if failure.is_none()
                && let Err(e) = site.merge(name)
            {
                failure = Some(e);
            }
        });
        if let Some(e) = failure {
            // Only reachable if a site disagrees with the registry; undo what was merged.
            self.visit_linear_sites_mut(&mut |site| site.reset());
            return Err(not_mergeable(e.to_string()));
        }
        self.registry_mut().merged = Some(name.to_string());
        Ok(())
    }

    /// Undoes [`AdapterModel::merge_adapter`]: the base weights come back (up to float rounding
    /// of the subtraction or division).
    fn reset_adapter(&mut self) {
        self.visit_linear_sites_mut(&mut |site| site.reset());
        self.registry_mut().merged = None;
    }

    /// The adapter currently merged into the weights, if any.
    fn merged_adapter(&self) -> Option<&str> {
        self.registry().merged.as_deref()
    }
}

impl<T: AdapterHost> AdapterModel for T {}

/// The modules of one adapter, built for each site of a host (in the visiting orders of
/// [`AdapterHost::visit_sites`] and [`AdapterHost::visit_linear_sites`]).
pub(crate) struct AdapterModules {
    pub residual: Vec<Option<Bottleneck>>,
    pub linear: Vec<Option<LoRA>>,
}

/// Builds the modules `config` places in `model`, without changing it. `seed` overrides the
/// configs' initialisation seeds (loading overwrites the values anyway).
pub(crate) fn build_modules<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    seed: Option<u64>,
) -> Result<AdapterModules> {
    let device = model.device()?;
    let hidden = model.hidden_size();
    if config.lora().is_some() {
        let mut sites = 0;
        model.visit_linear_sites(&mut |_| sites += 1);
        if sites == 0 {
            return Err(Error::Unsupported(
                "LoRA/IA3 on a host without linear sites (see `AdapterHost::visit_linear_sites`)"
                    .into(),
            ));
        }
    }
    let mut failure = None;
    let mut residual = Vec::new();
    model.visit_sites(&mut |site| {
        let built = match (site.placed(config), &failure) {
            (Some(bn), None) => {
                let bn = match seed {
                    Some(seed) => &BnConfig {
                        init_weights_seed: Some(seed),
                        ..bn.clone()
                    },
                    None => bn,
                };
                Bottleneck::new(bn, hidden, site.location().layer, &device)
                    .map_err(|e| failure = Some(e))
                    .ok()
            }
            _ => None,
        };
        residual.push(built);
    });
    let mut linear = Vec::new();
    model.visit_linear_sites(&mut |site| {
        let built = match (site.placed(config), &failure) {
            (Some(lora), None) => {
                let lora = match seed {
                    Some(seed) => &LoRAConfig {
                        init_weights_seed: Some(seed),
                        ..lora.clone()
                    },
                    None => lora,
                };
                let (d_input, d_output) = site.dims();
                LoRA::new(lora, d_input, d_output, &device)
                    .map_err(|e| failure = Some(e))
                    .ok()
            }
            _ => None,
        };
        linear.push(built);
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(AdapterModules { residual, linear }),
    }
}

/// Inserts an adapter's modules under `name`, and a head of the same name if given.
pub(crate) fn install<M: AdapterHost>(
    model: &mut M,
    name: &str,
    config: AdapterConfig,
    modules: AdapterModules,
    head: Option<PredictionHead>,
) {
    let autodiff = model.device().is_ok_and(|d| d.is_autodiff());
    let mut residual = modules.residual.into_iter();
    model.visit_sites_mut(&mut |site| {
        if let Some(Some(adapter)) = residual.next() {
            site.insert_adapter(name, match_autodiff(adapter, autodiff));
        }
    });
    let mut linear = modules.linear.into_iter();
    model.visit_linear_sites_mut(&mut |site| {
        if let Some(Some(lora)) = linear.next() {
            site.insert_lora(name, match_autodiff(lora, autodiff));
        }
    });
    if let (Some(head), Some(heads)) = (head, model.heads_mut()) {
        heads.insert(name, match_autodiff(head, autodiff));
    }
    let registry = model.registry_mut();
    registry.adapters.push((name.to_string(), config));
    // New parameters require gradients, as in PyTorch.
    registry.trainable.adapters.push(name.to_string());
    // Sites hold the active names; refresh them in case `name` is part of the active setup.
    let active = model.registry().active.clone();
    model.broadcast_active(active.as_ref());
}

/// Puts a freshly built module in training mode when the model lives on an autodiff device, so
/// its parameters track gradients like the rest of the model.
fn match_autodiff<M: Module>(module: M, autodiff: bool) -> M {
    if autodiff { module.train() } else { module }
}
