//! Building an adapter's modules for every site of a host, installing them, removing them, and
//! activating setups.

use std::borrow::Cow;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;

use super::AdapterHost;
use crate::composition::{ActivePlan, AdapterSetup};
use crate::config::{
    AdapterConfig, BnConfig, LinearPosition, LoRAConfig, PrefixTuningConfig, PromptTuningConfig,
    ReftConfig,
};
use crate::error::{Error, Result};
use crate::heads::PredictionHead;
use crate::methods::init::InitRng;
use crate::methods::{
    Bottleneck, InvertibleAdapter, LoRA, OutputBlocks, PrefixGate, PrefixShape, PrefixTuning,
    PromptTuning, ReftModule, SharedPhm, VeraProjections,
};

/// The modules of one adapter, built for each site of a host (in the orders of
/// [`AdapterHost::residual_sites`] and [`AdapterHost::linear_sites`]).
pub(crate) struct AdapterModules {
    pub residual: Vec<Option<Bottleneck>>,
    /// What the residual adapters' PHM layers share across layers.
    pub shared_phm: Option<SharedPhm>,
    pub linear: Vec<Option<LoRA>>,
    pub prefix: Option<PrefixModules>,
    pub prompt: Option<PromptTuning>,
    /// The invertible adapter on the embeddings.
    pub invertible: Option<InvertibleAdapter>,
    /// Per hidden-state site, in the order of [`AdapterHost::hidden_sites`].
    pub reft: Vec<Option<ReftModule>>,
}

/// An adapter's prefix module and what it places at each attention site.
pub(crate) struct PrefixModules {
    pub module: PrefixTuning,
    /// Per attention site (in the order of [`AdapterHost::attention_sites`]): the layer of the
    /// module it prepends and its gate, or `None` where the config leaves the layer out.
    pub sites: Vec<Option<(usize, Option<PrefixGate>)>>,
}

/// The device the model's parameters live on (new adapters are created there).
pub(crate) fn device_of<M: AdapterHost>(model: &M) -> Result<Device> {
    model.devices().into_iter().next().ok_or_else(|| {
        Error::InvalidSetup(
            "the model has no parameters, so no device to create adapters on".into(),
        )
    })
}

/// Builds the modules `config` places in `model`, without changing it. `seed` overrides the
/// configs' initialisation seeds (loading overwrites the values anyway).
pub(crate) fn build_modules<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    seed: Option<u64>,
) -> Result<AdapterModules> {
    let device = device_of(model)?;
    let hidden = model.hidden_size();
    if let Some(lora) = config.lora()
        && seed.is_some()
        && lora.init_weights.changes_base()
    {
        return Err(Error::Unsupported(format!(
            "loading or combining an adapter with init_weights \"{}\": its factors belong to the \
             residual weights its start left, not to this model's; save_adapter and \
             save_peft_adapter write such adapters as plain LoRAs, which load anywhere",
            lora.init_weights
        )));
    }
    if config.lora().is_some() && model.linear_sites().next().is_none() {
        return Err(Error::Unsupported(
            "LoRA/IA3 on a host without linear sites (see `AdapterHost::linear_sites`)".into(),
        ));
    }
    let residual: Vec<Option<Bottleneck>> = model
        .residual_sites()
        .map(|site| {
            let Some(bn) = config.bottleneck_at(site.location()) else {
                return Ok(None);
            };
            let bn = match seed {
                Some(seed) => Cow::Owned(BnConfig {
                    init_weights_seed: Some(seed),
                    ..bn.clone()
                }),
                None => Cow::Borrowed(bn),
            };
            Bottleneck::new(&bn, hidden, site.location().layer, &device).map(Some)
        })
        .collect::<Result<_>>()?;
    let shared_phm = build_shared_phm(model, config, &residual, seed, &device)?;
    let vera = vera_projections(model, config, seed, &device);
    let linear = model
        .linear_sites()
        .map(|site| {
            let Some(lora) = config.lora_at(site.location()) else {
                return Ok(None);
            };
            let lora = match seed {
                Some(seed) => Cow::Owned(LoRAConfig {
                    init_weights_seed: Some(seed),
                    ..lora.clone()
                }),
                None => Cow::Borrowed(lora),
            };
            let (d_input, d_output) = site.dims();
            match site.location().position {
                position if lora.scales_input_at(position, model.ffn_down_position()) => {
                    LoRA::new_scaling_input(&lora, d_input, &device)
                }
                LinearPosition::QueryKeyValue => {
                    let blocks = OutputBlocks::new(lora.fused_blocks().to_vec());
                    LoRA::new_in_blocks(&lora, d_input, d_output, blocks, &device)
                }
                _ => LoRA::new(&lora, d_input, d_output, &device),
            }
            .map(|module| match &vera {
                Some(projections) => module.with_vera(&lora, projections, [d_input, d_output]),
                None => module,
            })
            .and_then(|module| match lora.init_weights.changes_base() {
                true => module.with_base_init(&lora, site.unmerged_weight()),
                false => Ok(module),
            })
            .map(|module| match lora.use_dora {
                // PiSSA/OLoRA: the norm of the residual plus the start, the original weight's.
                true => {
                    let weight = match &module.initial {
                        Some(initial) => initial.residual(site.unmerged_weight()),
                        None => site.unmerged_weight(),
                    };
                    Some(module.with_magnitude(weight))
                }
                false => Some(module),
            })
        })
        .collect::<Result<_>>()?;
    let prefix = config
        .prefix_tuning()
        .map(|prefix| build_prefix(model, &seeded_prefix(prefix, seed), &device))
        .transpose()?;
    let prompt = config
        .prompt_tuning()
        .map(|prompt| build_prompt(model, prompt, seed, &device))
        .transpose()?;
    let reft = match config.reft() {
        Some(reft) => build_refts(model, reft, seed, &device)?,
        None => model.hidden_sites().map(|_| None).collect(),
    };
    let invertible = build_invertible(model, config, seed, &device)?;
    Ok(AdapterModules {
        residual,
        shared_phm,
        linear,
        prefix,
        prompt,
        invertible,
        reft,
    })
}

/// What the PHM layers of `config`'s Compacter part share across layers (`shared_phm_rule`,
/// `shared_W_phm`), for the width of its layers' adapters in `residual` (built for
/// [`AdapterHost::residual_sites`]).
fn build_shared_phm<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    residual: &[Option<Bottleneck>],
    seed: Option<u64>,
    device: &Device,
) -> Result<Option<SharedPhm>> {
    let mut sharing = config
        .parts()
        .iter()
        .filter_map(|part| part.bottleneck())
        .filter(|bn| bn.phm_layer && (bn.shared_phm_rule || bn.shared_w_phm));
    let Some(bn) = sharing.next() else {
        return Ok(None);
    };
    if sharing.next().is_some() {
        return Err(Error::Unsupported(
            "a union with two Compacter parts that share PHM parameters across layers \
             (AdapterHub keeps one set per adapter); set shared_phm_rule and shared_W_phm to false \
             in one of them"
                .into(),
        ));
    }
    if model.shared_parameters().is_none() {
        return Err(Error::Unsupported(
            "Compacter parameters shared across layers (`shared_phm_rule`, `shared_W_phm`) on a \
             host without shared parameters (see `AdapterHost::shared_parameters`)"
                .into(),
        ));
    }
    // The widths of the adapters built for the part's layers (each checked against `phm_dim`).
    let mut widths = model
        .residual_sites()
        .zip(residual)
        .filter(|(site, _)| bn.places_at(site.location()))
        .filter_map(|(_, adapter)| adapter.as_ref().map(Bottleneck::bottleneck_size));
    let Some(bottleneck) = widths.next() else {
        return Ok(None);
    };
    if bn.shared_w_phm && widths.any(|width| width != bottleneck) {
        return Err(Error::invalid(
            "reduction_factor",
            format!("{:?}", bn.reduction_factor),
            "weights shared across layers (shared_W_phm) need one bottleneck width in every layer",
        ));
    }
    let mut rng = InitRng::new(seed.or(bn.init_weights_seed), device);
    let dims = [model.hidden_size(), bottleneck];
    Ok(Some(SharedPhm::new(bn, dims, &mut rng, device)))
}

/// A VeRA config's shared matrices, drawn for the largest layer it wraps.
fn vera_projections<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    seed: Option<u64>,
    device: &Device,
) -> Option<VeraProjections> {
    let lora = config.lora().filter(|lora| lora.is_vera())?;
    let [mut max_input, mut max_output] = [0, 0];
    for site in model.linear_sites() {
        if config.lora_at(site.location()).is_some() {
            let (d_input, d_output) = site.dims();
            max_input = max_input.max(d_input);
            max_output = max_output.max(d_output);
        }
    }
    let mut rng = InitRng::new(seed.or(lora.init_weights_seed), device);
    let dims = [max_input, max_output];
    Some(VeraProjections::draw(lora, dims, &mut rng, device))
}

/// The invertible adapter of `config`'s bottleneck part that asks for one, for the host's
/// embedding site.
fn build_invertible<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    seed: Option<u64>,
    device: &Device,
) -> Result<Option<InvertibleAdapter>> {
    let Some(bn) = config
        .parts()
        .iter()
        .filter_map(|part| part.bottleneck())
        .find(|bn| bn.inv_adapter.is_some())
    else {
        return Ok(None);
    };
    if model.embedding_site().is_none() {
        return Err(Error::Unsupported(
            "invertible adapters (`inv_adapter`) on a host without an embedding site (see \
             `AdapterHost::embedding_site`)"
                .into(),
        ));
    }
    let bn = BnConfig {
        init_weights_seed: seed.or(bn.init_weights_seed),
        ..bn.clone()
    };
    InvertibleAdapter::new(&bn, model.hidden_size(), device)
}

/// The interventions of `config` after every layer it names.
fn build_refts<M: AdapterHost>(
    model: &M,
    config: &ReftConfig,
    seed: Option<u64>,
    device: &Device,
) -> Result<Vec<Option<ReftModule>>> {
    if model.hidden_sites().next().is_none() {
        return Err(Error::Unsupported(
            "ReFT on a host without hidden-state sites (see `AdapterHost::hidden_sites`)".into(),
        ));
    }
    if let crate::config::ReftLayers::Only(layers) = &config.layers {
        let count = model.num_layers();
        if let Some(layer) = layers.iter().find(|l| **l >= count) {
            return Err(Error::invalid(
                "layers",
                layer,
                format!("the model has layers 0..{count}"),
            ));
        }
    }
    let config = ReftConfig {
        init_weights_seed: seed.or(config.init_weights_seed),
        ..config.clone()
    };
    model
        .hidden_sites()
        .map(|site| {
            config
                .layers
                .contains(site.layer())
                .then(|| ReftModule::new(&config, model.hidden_size(), device))
                .transpose()
        })
        .collect()
}

/// A prompt of `config` for the host's embedding site.
fn build_prompt<M: AdapterHost>(
    model: &M,
    config: &PromptTuningConfig,
    seed: Option<u64>,
    device: &Device,
) -> Result<PromptTuning> {
    if model.embedding_site().is_none() {
        return Err(Error::Unsupported(
            "prompt tuning on a host without an embedding site (see `AdapterHost::embedding_site`)"
                .into(),
        ));
    }
    let config = PromptTuningConfig {
        init_weights_seed: seed.or(config.init_weights_seed),
        ..config.clone()
    };
    PromptTuning::new(&config, model.hidden_size(), device)
}

fn seeded_prefix(config: &PrefixTuningConfig, seed: Option<u64>) -> Cow<'_, PrefixTuningConfig> {
    match seed {
        Some(seed) => Cow::Owned(PrefixTuningConfig {
            init_weights_seed: Some(seed),
            ..config.clone()
        }),
        None => Cow::Borrowed(config),
    }
}

/// The prefix module of `config` for every attention site it reaches, with their gates.
fn build_prefix<M: AdapterHost>(
    model: &M,
    config: &PrefixTuningConfig,
    device: &Device,
) -> Result<PrefixModules> {
    let Some(pool) = model.prefix_pool() else {
        return Err(Error::Unsupported(
            "prefix tuning on a host without attention sites (see `AdapterHost::prefix_pool`)"
                .into(),
        ));
    };
    let mut layers = 0;
    let sites: Vec<Option<(usize, Option<PrefixGate>)>> = model
        .attention_sites()
        .map(|site| {
            config.places_at(site.layer()).then(|| {
                layers += 1;
                let gate = config
                    .use_gating
                    .then(|| PrefixGate::new(config, model.hidden_size(), device));
                (layers - 1, gate)
            })
        })
        .collect();
    if layers == 0 {
        return Err(Error::invalid(
            "leave_out",
            format!("{:?}", config.leave_out),
            "prefix tuning leaves out every attention layer",
        ));
    }
    let shape = PrefixShape {
        length: config.prefix_length,
        layers,
        heads: pool.kv_heads(),
        head_dim: pool.head_dim(),
    };
    let module = PrefixTuning::new(config, model.hidden_size(), shape, device)?;
    Ok(PrefixModules { module, sites })
}

/// Inserts an adapter's modules under `name`, and a head of the same name if given. New
/// parameters require gradients, as in PyTorch.
pub(crate) fn install<M: AdapterHost>(
    model: &mut M,
    name: &str,
    config: AdapterConfig,
    modules: AdapterModules,
    head: Option<PredictionHead>,
) {
    let autodiff = device_of(model).is_ok_and(|d| d.is_autodiff());
    for (site, adapter) in model.residual_sites_mut().zip(modules.residual) {
        if let Some(adapter) = adapter {
            site.insert_adapter(name, match_autodiff(adapter, autodiff));
        }
    }
    if let (Some(phm), Some(shared)) = (modules.shared_phm, model.shared_parameters_mut()) {
        shared.insert_phm(name, match_autodiff(phm, autodiff));
    }
    for (site, lora) in model.linear_sites_mut().zip(modules.linear) {
        if let Some(lora) = lora {
            site.insert_lora(name, match_autodiff(lora, autodiff));
        }
    }
    if let Some(prefix) = modules.prefix {
        for (site, placed) in model.attention_sites_mut().zip(prefix.sites) {
            if let Some((index, gate)) = placed {
                let gate = gate.map(|gate| match_autodiff(gate, autodiff));
                site.insert_prefix(name, index, gate);
            }
        }
        if let Some(pool) = model.prefix_pool_mut() {
            pool.insert(name, match_autodiff(prefix.module, autodiff));
        }
    }
    if let (Some(prompt), Some(site)) = (modules.prompt, model.embedding_site_mut()) {
        site.insert(name, match_autodiff(prompt, autodiff));
    }
    if let (Some(invertible), Some(site)) = (modules.invertible, model.embedding_site_mut()) {
        site.insert_invertible(name, match_autodiff(invertible, autodiff));
    }
    for (site, reft) in model.hidden_sites_mut().zip(modules.reft) {
        if let Some(reft) = reft {
            site.insert(name, match_autodiff(reft, autodiff));
        }
    }
    if let (Some(head), Some(heads)) = (head, model.heads_mut()) {
        heads.insert(name.to_string(), match_autodiff(head, autodiff));
    }
    let registry = model.registry_mut();
    registry.adapters.push((name.to_string(), config));
    registry.trainable.adapters.push(name.to_string());
}

/// Removes adapter `name` from every site (undoing its merge first) and from the registry,
/// with the fusion layers over it; the active setup is dropped if it names the adapter.
pub(crate) fn remove<M: AdapterHost>(model: &mut M, name: &str) {
    for site in model.residual_sites_mut() {
        site.remove_adapter(name);
    }
    if let Some(shared) = model.shared_parameters_mut() {
        shared.remove(name);
    }
    for site in model.linear_sites_mut() {
        site.remove_lora(name);
    }
    for site in model.attention_sites_mut() {
        site.remove_prefix(name);
    }
    if let Some(pool) = model.prefix_pool_mut() {
        pool.remove(name);
    }
    if let Some(site) = model.embedding_site_mut() {
        site.remove(name);
    }
    for site in model.hidden_sites_mut() {
        site.remove(name);
    }
    let fused: Vec<_> = model
        .registry()
        .fusions()
        .filter(|key| key.contains(name))
        .cloned()
        .collect();
    for key in &fused {
        super::fusion::remove(model, key);
    }
    let registry = model.registry_mut();
    if registry.merged.as_deref() == Some(name) {
        registry.merged = None;
    }
    registry.adapters.retain(|(n, _)| n != name);
    registry.trainable.adapters.retain(|n| n != name);
    if registry
        .active()
        .is_some_and(|setup| setup.names().contains(&name))
    {
        activate(model, None);
    }
}

/// Compiles `setup` once and hands the plan to every site (`None` deactivates).
pub(crate) fn activate<M: AdapterHost>(model: &mut M, setup: Option<AdapterSetup>) {
    activate_plan(model, setup.map(ActivePlan::new));
}

/// Hands `plan` to every site (`None` deactivates).
pub(crate) fn activate_plan<M: AdapterHost>(model: &mut M, plan: Option<ActivePlan>) {
    let plan = plan.map(Arc::new);
    for site in model.residual_sites_mut() {
        site.set_plan(plan.clone());
    }
    for site in model.linear_sites_mut() {
        site.set_plan(plan.clone());
    }
    for site in model.attention_sites_mut() {
        site.set_plan(plan.clone());
    }
    if let Some(pool) = model.prefix_pool_mut() {
        pool.set_plan(plan.clone());
    }
    if let Some(site) = model.embedding_site_mut() {
        site.set_plan(plan.clone());
    }
    for site in model.hidden_sites_mut() {
        site.set_plan(plan.clone());
    }
    model.registry_mut().active = plan;
}

/// Puts a freshly built module in training mode when the model lives on an autodiff device, so
/// its parameters track gradients like the rest of the model.
pub(crate) fn match_autodiff<M: Module>(module: M, autodiff: bool) -> M {
    if autodiff { module.train() } else { module }
}
