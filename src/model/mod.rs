//! The model-level adapter API, written once for every [`AdapterHost`].

mod average;
mod build;
mod freeze;
mod fusion;
mod host;
mod merge;
mod peft;
mod persist;
mod prefix;
mod prompt;
mod registry;
mod setup;
mod share;
mod summary;
mod task_merge;
mod transfer;
mod vera;
mod weighted;

pub use average::AverageStrategy;
pub use host::AdapterHost;
pub use registry::AdapterRegistry;
pub use summary::{AdapterSummary, AdapterSummaryRow};
pub use weighted::{Combination, MajoritySign, TaskMerge};

pub use crate::io::ModelInfo;

use std::path::Path;

use burn::tensor::Tensor;

use crate::composition::{ActivePlan, AdapterSetup, IntoAdapterSetup, IntoFusionKey};
use crate::config::{AdapterConfig, FusionConfig, PromptInit};
use crate::error::{Error, Result};
use crate::heads::{HeadConfig, PredictionHead};
use crate::names::{FusionKey, validate_name};
use build::{activate, build_modules, device_of, install, match_autodiff};
use registry::Trainability;

/// Options of [`AdapterModel::add_adapter_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddAdapterOptions {
    /// Replace an existing adapter of the same name instead of failing.
    pub overwrite_ok: bool,
    /// Activate the new adapter.
    pub set_active: bool,
}

/// The AdapterHub model API, available on every [`AdapterHost`].
///
/// Every fallible call leaves the model unchanged when it fails.
///
/// ```
/// use burn::tensor::Device;
/// use burn_adapters::prelude::*;
/// use burn_adapters::models::bert::{BertConfig, BertModel};
///
/// let device = Device::flex().autodiff();
/// let mut model = BertConfig::tiny().init(&device)?;
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
        if config
            .prompt_tuning()
            .is_some_and(|prompt| prompt.prompt_init == PromptInit::FromString)
        {
            return Err(Error::invalid(
                "prompt_init",
                "\"from_string\"",
                "this crate has no tokenizer: add the adapter with \"random_uniform\" and call \
                 init_prompt_from_tokens with the text's token ids",
            ));
        }
        // Build every module first so that a failure leaves the model untouched.
        let modules = build_modules(self, &config, None)?;
        if self.has_adapter(name) {
            build::remove(self, name);
        }
        install(self, name, config, modules, None);
        if options.set_active {
            activate(self, Some(AdapterSetup::Name(name.to_string())));
        }
        Ok(())
    }

    /// Removes adapter `name` from every site, with the fusion layers over it; the active setup
    /// is deactivated if it names the adapter.
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        if !self.has_adapter(name) {
            return Err(Error::UnknownAdapter(name.to_string()));
        }
        build::remove(self, name);
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

    /// Activates `setup` for the following forward passes: an [`AdapterSetup`] or its text
    /// (`"sst"`, `"Stack[a, b]"`, `"Fuse[a, b]"`).
    ///
    /// Fails, leaving the previous setup active, if the text does not parse, the setup names an
    /// unknown adapter, or a `Fuse` block has no fusion layer.
    fn set_active_adapters(&mut self, setup: impl IntoAdapterSetup) -> Result<()> {
        let setup = setup.into_setup()?;
        setup::check(self, &setup)?;
        activate(self, Some(setup));
        Ok(())
    }

    /// [`AdapterModel::set_active_adapters`] with no adapter running in the layers
    /// `skip_layers` (AdapterHub's `set_active_adapters(setup, skip_layers)`): AdapterDrop. The
    /// sites of a skipped layer run the plain layer, so dropping the lower layers' adapters saves
    /// their cost at inference; calling it before each training step with a random number of
    /// lower layers is AdapterDrop's training (see [`crate::train::AdapterDrop`]).
    ///
    /// Fails, leaving the previous setup active, as `set_active_adapters` does, or if a layer is
    /// beyond the model's (the error names `skip_layers`).
    fn set_active_adapters_skipping(
        &mut self,
        setup: impl IntoAdapterSetup,
        skip_layers: &[usize],
    ) -> Result<()> {
        let layers = self.num_layers();
        if let Some(layer) = skip_layers.iter().find(|l| **l >= layers) {
            return Err(Error::invalid(
                "skip_layers",
                layer,
                format!("the model has layers 0..{layers}"),
            ));
        }
        let setup = setup.into_setup()?;
        setup::check(self, &setup)?;
        build::activate_plan(self, Some(ActivePlan::new(setup).skipping(skip_layers)));
        Ok(())
    }

    /// Deactivates all adapters: the model computes its base function again.
    fn deactivate_adapters(&mut self) {
        activate(self, None);
    }

    /// The active setup, if any.
    fn active_adapters(&self) -> Option<&AdapterSetup> {
        self.registry().active()
    }

    /// Prepares `setup` for training: freezes every parameter of the model, unfreezes the
    /// parameters of the named adapters (and heads of the same names), and activates `setup`.
    ///
    /// Fails, changing nothing, if the model's device has no autodiff (create the model on
    /// `device.autodiff()`), the setup is invalid, or it names a merged adapter.
    fn train_adapter(&mut self, setup: impl IntoAdapterSetup) -> Result<()> {
        let setup = setup.into_setup()?;
        if let Some(merged) = self.merged_adapter()
            && setup.names().contains(&merged)
        {
            return Err(Error::InvalidSetup(format!(
                "`{merged}` is merged into the weights; call `reset_adapter` before training it"
            )));
        }
        setup::check(self, &setup)?;
        freeze::check_trainable(self)?;
        let names: Vec<String> = setup.names().into_iter().map(str::to_string).collect();
        activate(self, Some(setup));
        freeze::apply(
            self,
            Trainability {
                base: false,
                heads: names.clone(),
                adapters: names,
                fusions: Vec::new(),
            },
        );
        Ok(())
    }

    /// Prepares head `name` for training over a frozen model (a linear probe): freezes every
    /// parameter except the head's. The active adapter setup is left as it is.
    fn train_head(&mut self, name: &str) -> Result<()> {
        if !self.has_head(name) {
            return Err(Error::UnknownHead(name.to_string()));
        }
        freeze::check_trainable(self)?;
        freeze::apply(
            self,
            Trainability {
                base: false,
                heads: vec![name.to_string()],
                ..Trainability::default()
            },
        );
        Ok(())
    }

    /// Freezes (`true`) or unfreezes (`false`) every parameter of the model, adapters, fusion
    /// layers and heads included.
    fn freeze_model(&mut self, freeze: bool) {
        let plan = match freeze {
            true => Trainability::default(),
            false => Trainability {
                base: true,
                adapters: self.adapter_names(),
                fusions: self.registry().fusions().cloned().collect(),
                heads: self
                    .heads()
                    .map(|heads| heads.iter().map(|(name, _)| name.clone()).collect())
                    .unwrap_or_default(),
            },
        };
        freeze::apply(self, plan);
    }

    /// A table of the adapters: architecture, parameter count, share of the base model, active,
    /// trainable.
    fn adapter_summary(&self) -> AdapterSummary {
        summary::summarize(self)
    }

    /// Saves adapter `name` into `dir` as AdapterHub does: `adapter_config.json` and
    /// `adapter.safetensors` with AdapterHub's tensor names and torch layouts, and the head of
    /// the same name if there is one. The files are written to temporaries and renamed into
    /// place, so readers never see a partial adapter.
    fn save_adapter(&self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        persist::save_adapter(self, dir.as_ref(), name)
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
        persist::load_adapter(self, dir.as_ref(), None)
    }

    /// [`AdapterModel::load_adapter`] under a new name.
    fn load_adapter_as(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<String> {
        persist::load_adapter(self, dir.as_ref(), Some(name))
    }

    /// Loads every adapter directory below `dir` (as written by
    /// [`AdapterModel::save_all_adapters`]), all or nothing. Returns the names, sorted.
    fn load_all_adapters(&mut self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dirs = crate::io::adapterhub::adapter_dirs(dir.as_ref())?;
        let mut candidate = self.clone();
        let names = dirs
            .iter()
            .map(|sub| candidate.load_adapter(sub))
            .collect::<Result<Vec<_>>>()?;
        *self = candidate;
        Ok(names)
    }

    /// Loads a Hugging Face PEFT LoRA (`adapter_config.json` with `peft_type: "LORA"` and
    /// `adapter_model.safetensors`) as adapter `name`.
    ///
    /// The wrapped modules must be linear sites of this host, placed as AdapterHub's LoRA can
    /// describe (attention query, key, value and the feed-forward projections, the same in
    /// every layer not left out); PEFT's `lora_alpha / r` and rsLoRA's `lora_alpha / √r`
    /// scaling carry over exactly. On any error the model is unchanged.
    fn load_peft_adapter(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        peft::load(self, dir.as_ref(), name)
    }

    /// Saves LoRA adapter `name` in Hugging Face PEFT's format, loadable with
    /// `PeftModel.from_pretrained` on the same base model. Gated LoRA, IA3 and unions have no
    /// PEFT LoRA equivalent and are refused.
    fn save_peft_adapter(&self, dir: impl AsRef<Path>, name: &str) -> Result<()> {
        peft::save(self, dir.as_ref(), name)
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
        let device = device_of(self)?;
        let head = PredictionHead::new(config, self.hidden_size(), self.head_dropout(), &device)?;
        let head = match_autodiff(head, device.is_autodiff());
        if let Some(heads) = self.heads_mut() {
            heads.insert(name.to_string(), head);
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

    /// Adds an AdapterFusion layer over `adapters` (`"Fuse[a, b]"`, `"a,b"`, a `Fuse` block or a
    /// [`FusionKey`]) at every site that holds all of them, with `config`
    /// (`FusionConfig::load("dynamic")`). Activate it with `set_active_adapters("Fuse[a, b]")`.
    ///
    /// A `Fuse` block names its layer as AdapterHub's `Fuse.name` does, by the last adapter of
    /// each child: `Fuse[Stack[a, b], c]` uses (and here adds) the layer `b,c`.
    fn add_adapter_fusion(
        &mut self,
        adapters: impl IntoFusionKey,
        config: FusionConfig,
    ) -> Result<()> {
        let key = adapters.into_fusion_key()?;
        fusion::check_absent(self, &key)?;
        let fusions = fusion::build(self, &key, &config)?;
        fusion::install(self, key, config, fusions);
        Ok(())
    }

    /// Removes the fusion layer over `adapters`; the active setup is deactivated if one of its
    /// `Fuse` blocks runs that layer.
    fn delete_adapter_fusion(&mut self, adapters: impl IntoFusionKey) -> Result<()> {
        let key = adapters.into_fusion_key()?;
        if self.registry().fusion_config(&key).is_none() {
            return Err(Error::UnknownFusion(key.to_string()));
        }
        if self
            .active_adapters()
            .is_some_and(|setup| setup.fusion_keys().contains(&key))
        {
            self.deactivate_adapters();
        }
        fusion::remove(self, &key);
        Ok(())
    }

    /// Prepares `setup` (holding a `Fuse` block) for training: freezes everything, unfreezes
    /// its fusion layers (and, with `unfreeze_adapters`, the fused adapters and heads of their
    /// names), activates it.
    fn train_adapter_fusion(
        &mut self,
        setup: impl IntoAdapterSetup,
        unfreeze_adapters: bool,
    ) -> Result<()> {
        let setup = setup.into_setup()?;
        let fusions = setup.fusion_keys();
        if fusions.is_empty() {
            return Err(Error::InvalidSetup(format!("`{setup}` has no Fuse block")));
        }
        setup::check(self, &setup)?;
        freeze::check_trainable(self)?;
        let adapters: Vec<String> = match unfreeze_adapters {
            true => setup.names().into_iter().map(str::to_string).collect(),
            false => Vec::new(),
        };
        activate(self, Some(setup));
        freeze::apply(
            self,
            Trainability {
                base: false,
                heads: adapters.clone(),
                adapters,
                fusions,
            },
        );
        Ok(())
    }

    /// The value regularisation of the training fusion layers, `Σ 0.01·‖I − W_v‖²`, to add to
    /// the loss as AdapterHub's trainer does (`None` when no such layer trains).
    fn fusion_regularization_loss(&self) -> Option<Tensor<1>> {
        fusion::regularization_loss(self)
    }

    /// Saves the fusion layer over `adapters` as AdapterHub does: `adapter_fusion_config.json`
    /// and `model_adapter_fusion.safetensors`.
    fn save_adapter_fusion(
        &self,
        dir: impl AsRef<Path>,
        adapters: impl IntoFusionKey,
    ) -> Result<()> {
        fusion::save(self, dir.as_ref(), &adapters.into_fusion_key()?)
    }

    /// Loads a fusion layer saved by AdapterHub or [`AdapterModel::save_adapter_fusion`]; the
    /// fused adapters must be loaded already. Returns the fusion's key (`a,b`).
    fn load_adapter_fusion(&mut self, dir: impl AsRef<Path>) -> Result<FusionKey> {
        fusion::load(self, dir.as_ref())
    }

    /// Adds adapter `name` combining `sources` (`(name, weight)`, all of one config) with
    /// `strategy` (AdapterHub's `average_adapter`). Weights are used as given.
    fn average_adapter(
        &mut self,
        name: &str,
        sources: &[(&str, f64)],
        strategy: AverageStrategy,
    ) -> Result<()> {
        average::average_adapter(self, name, sources, strategy)
    }

    /// Adds LoRA adapter `name` combining the LoRA adapters `sources` (`(name, weight)`; weights
    /// may be negative) by one of PEFT's combinations (PEFT's `add_weighted_adapter`): see
    /// [`Combination`]. The sources must be plain LoRAs with one placement; a single source is
    /// combined linearly, as PEFT does.
    ///
    /// ```
    /// # use burn_adapters::prelude::*;
    /// # use burn_adapters::models::bert::BertConfig;
    /// use burn_adapters::model::{Combination, MajoritySign, TaskMerge};
    /// # let mut model = BertConfig::tiny().init(&burn::tensor::Device::flex())?;
    /// model.add_adapter("sst", AdapterConfig::load("lora[init_weights=bert]")?)?;
    /// model.add_adapter("imdb", AdapterConfig::load("lora[init_weights=bert]")?)?;
    /// let ties = TaskMerge::Ties { density: 0.5, majority_sign: MajoritySign::Total };
    /// model.add_weighted_adapter("both", &[("sst", 0.6), ("imdb", 0.4)], Combination::Factors(ties))?;
    /// let svd = Combination::Svd { merge: TaskMerge::TaskArithmetic, rank: Some(4) };
    /// model.add_weighted_adapter("both_svd", &[("sst", 0.6), ("imdb", 0.4)], svd)?;
    /// # Ok::<(), burn_adapters::Error>(())
    /// ```
    fn add_weighted_adapter(
        &mut self,
        name: &str,
        sources: &[(&str, f64)],
        combination: Combination,
    ) -> Result<()> {
        weighted::add_weighted_adapter(self, name, sources, combination)
    }

    /// Splits a model output computed under a `Parallel` setup into one tensor per branch (the
    /// batch is `branches × original batch`); without `Parallel`, the tensor itself. Fails if the
    /// output's batch is not a multiple of the branches (an output of another setup).
    fn split_parallel<const D: usize>(&self, output: Tensor<D>) -> Result<Vec<Tensor<D>>> {
        let channels = self.registry().parallel_channels();
        let batch = output.dims()[0];
        if channels <= 1 {
            return Ok(vec![output]);
        }
        if !batch.is_multiple_of(channels) {
            return Err(Error::input(
                "output",
                format!(
                    "its batch of {batch} rows is not a multiple of the {channels} branches of the active Parallel setup"
                ),
            ));
        }
        Ok(output.chunk(channels, 0))
    }

    /// Folds LoRA/IA3 adapter `name` into the weights of the layers it wraps, so that inference
    /// costs nothing extra (AdapterHub's `merge_adapter`). While merged, the adapter is not
    /// applied again on top of its merged weights; other active LoRAs still are.
    ///
    /// Fails without changing the model if `name` is unknown, has no LoRA/IA3 part, is gated
    /// (its update depends on its input), is an IA3 whose scaling has a zero entry (the merge
    /// could not be undone), or another adapter is merged already.
    fn merge_adapter(&mut self, name: &str) -> Result<()> {
        merge::merge(self, name)
    }

    /// Undoes [`AdapterModel::merge_adapter`]: the base weights come back (up to float rounding
    /// of the subtraction or division).
    fn reset_adapter(&mut self) {
        merge::reset(self);
    }

    /// The adapter currently merged into the weights, if any.
    fn merged_adapter(&self) -> Option<&str> {
        self.registry().merged.as_deref()
    }

    /// Folds adapter `name`'s prefix-tuning MLP into the flat form for inference (AdapterHub's
    /// `eject_prefix_tuning`): the same prefixes, as values, without the MLP's parameters; its
    /// config records `flat`. A flat prefix is left as it is.
    ///
    /// Fails if the adapter does not exist or has no prefix tuning.
    fn eject_prefix_tuning(&mut self, name: &str) -> Result<()> {
        prefix::eject(self, name)
    }

    /// Starts adapter `name`'s prompt from the word embeddings of `tokens` (a text's token ids,
    /// special tokens included if wanted), repeated to the prompt's length and cut there:
    /// AdapterHub's `prompt_init = "from_string"` with the tokenizing done by the caller.
    ///
    /// Fails if the adapter has no prompt, `tokens` is empty or holds an id outside the
    /// vocabulary, or the host has no word embeddings.
    fn init_prompt_from_tokens(&mut self, name: &str, tokens: &[usize]) -> Result<()> {
        prompt::init_from_tokens(self, name, tokens)
    }

    /// Makes the MTL-LoRA adapters `names` share one `A` and one set of up projections at
    /// every projection they wrap, starting from `reference`'s (default: the first adapter's),
    /// as AdapterHub's `share_parameters`: each keeps its task-specific matrix and mixing
    /// weights, training updates the shared factors once, and `save_adapter` writes them into
    /// every sharing adapter's file. The site holds them under `shared_parameters.<a,b>`.
    ///
    /// Fails, changing nothing, if a name is unknown or not an MTL-LoRA adapter, the reference
    /// is not among `names`, one of them is merged, or their factors differ in shape.
    fn share_parameters(&mut self, names: &[&str], reference: Option<&str>) -> Result<()> {
        share::share(self, names, reference)
    }

    /// Undoes [`AdapterModel::share_parameters`] for the same `names`: each adapter gets its
    /// own copy of the shared factors.
    fn unshare_parameters(&mut self, names: &[&str]) -> Result<()> {
        share::unshare(self, names)
    }
}

impl<T: AdapterHost> AdapterModel for T {}
