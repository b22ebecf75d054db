//! The model-level adapter API, written once for every [`AdapterHost`].

mod build;
mod compose;
mod freeze;
mod host;
mod registry;
mod summary;

pub use compose::AverageStrategy;
pub use host::*;
pub use registry::AdapterRegistry;
pub use summary::*;

pub(crate) use build::{AdapterModules, build_modules, install, match_autodiff};
use registry::Trainability;

pub(crate) use compose::build_fusions;

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};

use crate::composition::AdapterSetup;
use crate::config::{AdapterConfig, FusionConfig};
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};

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

/// The longest name in bytes: `save_all_adapters` uses names as directory names.
const MAX_NAME_BYTES: usize = 255;

/// Checks that `name` can be used as an adapter name.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidName {
        name: crate::error::shorten(name, 0),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("names must not be empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "names are at most {MAX_NAME_BYTES} bytes (they name directories), this one has {}",
            name.len()
        )));
    }
    match name
        .chars()
        .find(|c| FORBIDDEN_IN_NAMES.contains(c) || c.is_whitespace() || c.is_control())
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
        let fused: Vec<String> = self
            .registry()
            .fusions
            .iter()
            .filter(|f| f.adapters.iter().any(|a| a == name))
            .map(|f| f.name.clone())
            .collect();
        for fusion in fused {
            compose::remove_fusion(self, &fusion);
        }
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
        compose::check_setup(self, &setup)?;
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
        let shared: Option<Arc<AdapterSetup>> = setup.map(|s| Arc::new(s.clone()));
        self.visit_sites_mut(&mut |site| site.set_active(shared.clone()));
        self.visit_linear_sites_mut(&mut |site| site.set_active(shared.clone()));
    }

    /// Adds an AdapterFusion layer over `adapters` (`Fuse[a, b]`, or `"a,b"`) at every site that
    /// holds all of them, with `config` (`FusionConfig::load("dynamic")`). Activate it with
    /// `set_active_adapters(Fuse[a, b])`.
    fn add_adapter_fusion(
        &mut self,
        adapters: impl Into<AdapterSetup>,
        config: FusionConfig,
    ) -> Result<()> {
        let adapters = compose::fusion_adapters(&adapters.into())?;
        let name = adapters.join(",");
        if self.registry().fusions.iter().any(|f| f.name == name) {
            return Err(Error::InvalidSetup(format!(
                "a fusion of {name} exists already"
            )));
        }
        let fusions = compose::build_fusions(self, &adapters, &config)?;
        compose::install_fusions(self, adapters, config, fusions);
        Ok(())
    }

    /// Removes the fusion layer over `adapters`.
    fn delete_adapter_fusion(&mut self, adapters: impl Into<AdapterSetup>) -> Result<()> {
        let name = compose::fusion_adapters(&adapters.into())?.join(",");
        if !self.registry().fusions.iter().any(|f| f.name == name) {
            return Err(Error::InvalidSetup(format!("no fusion of {name}")));
        }
        if self.active_adapters().is_some_and(|s| {
            s.to_string()
                .contains(&format!("Fuse[{}]", name.replace(',', ", ")))
        }) {
            self.deactivate_adapters();
        }
        compose::remove_fusion(self, &name);
        Ok(())
    }

    /// Prepares `setup` (holding a `Fuse` block) for training: freezes everything, unfreezes
    /// its fusion layers (and, with `unfreeze_adapters`, the fused adapters), activates it.
    fn train_adapter_fusion(
        &mut self,
        setup: impl Into<AdapterSetup>,
        unfreeze_adapters: bool,
    ) -> Result<()> {
        let setup = setup.into();
        let mut names = Vec::new();
        fn fusions_in(setup: &AdapterSetup, out: &mut Vec<String>) {
            if let Some(name) = setup.fusion_name() {
                out.push(name);
            }
            setup.children().iter().for_each(|c| fusions_in(c, out));
        }
        fusions_in(&setup, &mut names);
        if names.is_empty() {
            return Err(Error::InvalidSetup(format!("`{setup}` has no Fuse block")));
        }
        self.set_active_adapters(setup.clone())?;
        if unfreeze_adapters {
            names.extend(setup.names().into_iter().map(str::to_string));
        }
        freeze::set_trainable(self, &names);
        self.registry_mut().trainable = Trainability {
            base: false,
            adapters: names,
        };
        Ok(())
    }

    /// The value regularisation of the training fusion layers, `Σ 0.01·‖I − W_v‖²`, to add to
    /// the loss as AdapterHub's trainer does (`None` when no such layer trains).
    fn fusion_regularization_loss(&self) -> Option<Tensor<1>> {
        compose::fusion_regularization_loss(self)
    }

    /// Saves the fusion layer over `adapters` as AdapterHub does: `adapter_fusion_config.json`
    /// and `model_adapter_fusion.safetensors`.
    fn save_adapter_fusion(
        &self,
        dir: impl AsRef<Path>,
        adapters: impl Into<AdapterSetup>,
    ) -> Result<()> {
        let name = compose::fusion_adapters(&adapters.into())?.join(",");
        crate::io::fusion::save_fusion(self, dir.as_ref(), &name)
    }

    /// Loads a fusion layer saved by AdapterHub or [`AdapterModel::save_adapter_fusion`]; the
    /// fused adapters must be loaded already. Returns the fusion's name (`"a,b"`).
    fn load_adapter_fusion(&mut self, dir: impl AsRef<Path>) -> Result<String> {
        let (adapters, config, fusions) = crate::io::fusion::read_fusion(self, dir.as_ref())?;
        let name = adapters.join(",");
        if self.registry().fusions.iter().any(|f| f.name == name) {
            return Err(Error::InvalidSetup(format!(
                "a fusion of {name} exists already"
            )));
        }
        compose::install_fusions(self, adapters, config, fusions);
        Ok(name)
    }

    /// Adds adapter `name` combining `sources` (`(name, weight)`, all of one config) with
    /// `strategy` (AdapterHub's `average_adapter`). Weights are used as given.
    fn average_adapter(
        &mut self,
        name: &str,
        sources: &[(&str, f64)],
        strategy: AverageStrategy,
    ) -> Result<()> {
        let sources: Vec<(String, f64)> =
            sources.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        compose::average_adapter(self, name, &sources, strategy)
    }

    /// Splits a model output computed under a `Parallel` setup into one tensor per branch
    /// (the batch is `branches × original batch`); without `Parallel`, the tensor itself.
    fn split_parallel<const D: usize>(&self, output: Tensor<D>) -> Vec<Tensor<D>> {
        let channels = self.registry().parallel_channels();
        let batch = output.dims()[0];
        if channels <= 1 || !batch.is_multiple_of(channels) {
            return vec![output];
        }
        output.chunk(channels, 0)
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
