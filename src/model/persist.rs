//! Saving and loading adapters (and their heads) in AdapterHub's files: the host's modules to
//! tensors by AdapterHub key and back. `io` reads and writes the files; this builds the modules
//! from what it read and installs them.

use std::path::Path;

use super::build::{AdapterModules, PrefixModules, build_modules, device_of, install};
use super::transfer::{Filler, collect};
use super::vera::{VeraLayout, read_vera, vera_aware, vera_sites, write_vera};
use super::{AdapterHost, AdapterModel};
use crate::config::{AdapterConfig, AttnMatrix, LinearPosition, LoRAConfig, LoRAInit};
use crate::error::{Error, Result};
use crate::heads::PredictionHead;
use crate::io::adapterhub::{
    AdapterRecord, HeadRecord, SavedAdapter, SavedHead, read_adapter, write_adapter,
};
use crate::io::in_file;
use crate::io::keys::{
    SELF_PREFIX, bottleneck_name, head_name, invertible_name, lora_name, prefix_gate_name,
    prefix_name, prompt_name, reft_name, shared_factor_name, shared_phm_name, wrapped_module,
};
use crate::io::tensors::TensorMap;
use crate::names::validate_name;

/// Writes adapter `name` of `model` (and its head, if it has one) into `dir`.
pub(crate) fn save_adapter<M: AdapterHost>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let config = model
        .registry()
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    check_adapterhub_form(model, config, name)?;
    let config = &adapterhub_form(config);
    let head = model.heads().and_then(|heads| heads.get(name));
    let record = AdapterRecord {
        name,
        config,
        hidden_size: model.hidden_size(),
        info: model.model_info(),
        tensors: adapter_tensors(model, name),
        head: head.map(|head| HeadRecord {
            config: &head.config,
            tensors: head_tensors(head, name),
        }),
    };
    write_adapter(dir, record)
}

/// `config` as AdapterHub 1.3.0 can read it: it has no rsLoRA, so an rsLoRA's scaling
/// `alpha / √r` is written as `alpha' / r` with `alpha' = alpha·√r`.
///
/// PiSSA and OLoRA are written as the plain LoRA they convert to ([`LoRAConfig::as_saved`]), and
/// PEFT's Gaussian start, which AdapterHub does not know, as its `"lora"` (the start does not
/// matter to a saved adapter).
fn adapterhub_form(config: &AdapterConfig) -> AdapterConfig {
    let fold = |part: &AdapterConfig| match part {
        AdapterConfig::Lora(lora) => {
            let lora = lora.as_saved();
            AdapterConfig::Lora(LoRAConfig {
                alpha: match lora.use_rslora {
                    true => lora.alpha * (lora.r as f64).sqrt(),
                    false => lora.alpha,
                },
                use_rslora: false,
                init_weights: match lora.init_weights {
                    LoRAInit::Gaussian => LoRAInit::Lora,
                    init => init,
                },
                ..lora
            })
        }
        other => other.clone(),
    };
    match config {
        AdapterConfig::Union(parts) => AdapterConfig::Union(parts.iter().map(fold).collect()),
        single => fold(single),
    }
}

/// What AdapterHub 1.3.0 cannot hold: LoRA on the attention output or the feed-forward gate
/// (PEFT placements), or a PEFT LoRA on a whole fused projection (AdapterHub's fused LoRA holds
/// one `A` per enabled block).
fn check_adapterhub_form<M: AdapterHost>(
    model: &M,
    config: &AdapterConfig,
    name: &str,
) -> Result<()> {
    if let Some(lora) = config.lora()
        && lora.ia3_input_scaling
    {
        return Err(Error::Unsupported(format!(
            "saving `{name}` in AdapterHub's format: AdapterHub 1.3.0's IA3 scales outputs only \
             (`ia3_input_scaling`); save it with save_peft_adapter"
        )));
    }
    if let Some(lora) = config.lora()
        && (lora.attn_matrices.contains(&AttnMatrix::O) || lora.gate_lora)
    {
        return Err(Error::Unsupported(format!(
            "saving `{name}` in AdapterHub's format: AdapterHub 1.3.0 has no LoRA on the \
             attention output (`attn_matrices` \"o\") or the feed-forward gate (`gate_lora`); save \
             it with save_peft_adapter"
        )));
    }
    super::vera::check_one_shape(model, name)?;
    let unblocked = model.linear_sites().find(|site| {
        site.location().position == LinearPosition::QueryKeyValue
            && site
                .loras()
                .get(name)
                .is_some_and(|lora| lora.blocks.is_none())
    });
    match unblocked {
        Some(site) => Err(Error::Unsupported(format!(
            "saving `{name}` in AdapterHub's format: its LoRA on `{}` (from a PEFT file) has one \
             A for the query, key and value blocks, AdapterHub's one per block; save it with \
             save_peft_adapter",
            wrapped_module(&model.linear_site_path(site.location()))
        ))),
        None => Ok(()),
    }
}

/// The tensors of adapter `name` by AdapterHub key, torch layout.
fn adapter_tensors<M: AdapterHost>(model: &M, name: &str) -> TensorMap {
    let mut tensors = TensorMap::new();
    for site in model.residual_sites() {
        if let Some(adapter) = site.adapters().get(name) {
            let ln_before = adapter.norm_before.is_some();
            let naming = |path: &str| bottleneck_name(path, ln_before);
            let prefix = format!("{}.{name}", model.site_path(site.location()));
            collect(adapter, prefix, &naming, &mut tensors);
        }
    }
    if let Some(phm) = model
        .shared_parameters()
        .and_then(|shared| shared.phm().get(name))
    {
        collect(
            phm,
            shared_path(model, name),
            &shared_phm_name,
            &mut tensors,
        );
    }
    for site in model.linear_sites() {
        if let Some(lora) = site.loras().get(name) {
            let prefix = format!("{}.{name}", model.linear_site_path(site.location()));
            // Shared MTL-LoRA factors are written into every sharing adapter's file, as
            // AdapterHub writes them.
            if let Some(shared) = site.shared_of(lora) {
                collect(shared, prefix.clone(), &shared_factor_name, &mut tensors);
            }
            collect(
                lora.as_saved().as_ref(),
                prefix,
                &vera_aware(lora, lora_name),
                &mut tensors,
            );
        }
    }
    let layout = VeraLayout::adapterhub(model, name);
    let prefixes = vera_sites(
        model,
        model.linear_sites().map(|s| s.loras().get(name)),
        |site| format!("{}.{name}", model.linear_site_path(site.location())),
    );
    let prefixes: Vec<String> = prefixes.into_iter().map(|(p, _)| p).collect();
    write_vera(model, name, &layout, &prefixes, &mut tensors);
    for site in model.attention_sites() {
        if let Some(gate) = site.gates().get(name) {
            let prefix = prefix_gates_path(model, site.layer(), name);
            collect(gate, prefix, &prefix_gate_name, &mut tensors);
        }
    }
    if let Some(prefix) = model
        .prefix_pool()
        .and_then(|pool| pool.prefixes().get(name))
    {
        let path = prefix_module_path(&model.prefix_pool_path(), name);
        collect(prefix, path, &prefix_name, &mut tensors);
    }
    if let Some(prompt) = model
        .embedding_site()
        .and_then(|site| site.prompts().get(name))
    {
        collect(prompt, prompt_path(model, name), &prompt_name, &mut tensors);
    }
    if let Some(invertible) = model
        .embedding_site()
        .and_then(|site| site.invertibles().get(name))
    {
        let path = invertible_path(model, name);
        collect(invertible, path, &invertible_name, &mut tensors);
    }
    for site in model.hidden_sites() {
        if let Some(reft) = site.refts().get(name) {
            collect(
                reft,
                reft_path(model, site.layer(), name),
                &reft_name,
                &mut tensors,
            );
        }
    }
    tensors
}

/// Where adapter `name`'s intervention after layer `layer` sits.
fn reft_path<M: AdapterHost>(model: &M, layer: usize, name: &str) -> String {
    format!("{}.refts.{name}", model.hidden_site_path(layer))
}

/// Where adapter `name`'s prompt sits.
fn prompt_path<M: AdapterHost>(model: &M, name: &str) -> String {
    format!("{}.prompt_tunings.{name}", model.embedding_site_path())
}

/// Where adapter `name`'s shared parameters sit.
fn shared_path<M: AdapterHost>(model: &M, name: &str) -> String {
    format!("{}.{name}", model.shared_parameters_path())
}

/// Where adapter `name`'s invertible adapter sits.
fn invertible_path<M: AdapterHost>(model: &M, name: &str) -> String {
    format!("{}.{name}", model.invertible_adapters_path())
}

/// Where adapter `name`'s prefix module sits under the pool at `pool_path`.
fn prefix_module_path(pool_path: &str, name: &str) -> String {
    format!("{pool_path}.prefix_tunings.{name}.{SELF_PREFIX}")
}

/// Where adapter `name`'s prefix gate of layer `layer` sits.
fn prefix_gates_path<M: AdapterHost>(model: &M, layer: usize, name: &str) -> String {
    format!("{}.prefix_gates.{name}", model.attention_site_path(layer))
}

/// A head's tensors by AdapterHub key (`heads.<name>.<index>.weight`), torch layout.
fn head_tensors(head: &PredictionHead, name: &str) -> TensorMap {
    let mut tensors = TensorMap::new();
    let naming = |path: &str| head_name(path, |i| head.reference_index(i), |i| head.norm_index(i));
    collect(head, format!("heads.{name}"), &naming, &mut tensors);
    tensors
}

/// Loads the adapter in `dir` as `load_as` (default: its saved name), all or nothing, and
/// returns the name.
pub(crate) fn load_adapter<M: AdapterModel>(
    model: &mut M,
    dir: &Path,
    load_as: Option<&str>,
) -> Result<String> {
    if let Some(name) = load_as {
        validate_name(name)?;
    }
    let saved = read_adapter(dir, model.heads().is_some())?;
    saved.envelope.check_hidden_size(model.hidden_size())?;
    let name = load_as.unwrap_or(&saved.envelope.name).to_string();
    validate_name(&name)?;
    if model.has_adapter(&name) {
        return Err(Error::DuplicateAdapter(name));
    }
    if saved.head.is_some() && model.has_head(&name) {
        return Err(Error::DuplicateHead(name));
    }
    let modules = adapter_modules(model, &saved)?;
    let head = saved
        .head
        .as_ref()
        .map(|head| build_head(model, head))
        .transpose()?;
    install(model, &name, saved.config, modules, head);
    Ok(name)
}

/// The adapter's modules for `model`, filled with the saved tensors; every tensor must be used.
fn adapter_modules<M: AdapterHost>(model: &M, saved: &SavedAdapter) -> Result<AdapterModules> {
    // The initial values are overwritten; a fixed seed avoids drawing from the device.
    let AdapterModules {
        residual,
        shared_phm,
        linear,
        prefix,
        prompt,
        invertible,
        reft,
    } = build_modules(model, &saved.config, Some(0))?;
    let device = device_of(model)?;
    // The file records the adapter under the name it was saved with.
    let saved_name = &saved.envelope.name;
    let vera = vera_sites(model, linear.iter().map(Option::as_ref), |site| {
        format!("{}.{saved_name}", model.linear_site_path(site.location()))
    });
    let layout = VeraLayout::adapterhub(model, saved_name);
    let weights = read_vera(&saved.weights, &layout, &vera)?;
    let mut filler = Filler::new(&weights, &device);
    let residual = residual
        .into_iter()
        .zip(model.residual_sites())
        .map(|(adapter, site)| {
            let Some(adapter) = adapter else {
                return Ok(None);
            };
            let ln_before = adapter.norm_before.is_some();
            let naming = move |path: &str| bottleneck_name(path, ln_before);
            let prefix = format!("{}.{saved_name}", model.site_path(site.location()));
            filler.fill(adapter, prefix, &naming).map(Some)
        })
        .collect::<Result<_>>()?;
    let shared_phm = shared_phm
        .map(|phm| filler.fill(phm, shared_path(model, saved_name), &shared_phm_name))
        .transpose()?;
    let linear = linear
        .into_iter()
        .zip(model.linear_sites())
        .map(|(lora, site)| {
            let prefix = format!("{}.{saved_name}", model.linear_site_path(site.location()));
            lora.map(|lora| filler.fill(lora, prefix, &lora_name))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let prefix = prefix
        .map(|prefix| fill_prefix(model, prefix, &mut filler, saved_name))
        .transpose()?;
    let prompt = prompt
        .map(|prompt| filler.fill(prompt, prompt_path(model, saved_name), &prompt_name))
        .transpose()?;
    let invertible = invertible
        .map(|inv| filler.fill(inv, invertible_path(model, saved_name), &invertible_name))
        .transpose()?;
    let reft = reft
        .into_iter()
        .zip(model.hidden_sites())
        .map(|(reft, site)| {
            let path = reft_path(model, site.layer(), saved_name);
            reft.map(|reft| filler.fill(reft, path, &reft_name))
                .transpose()
        })
        .collect::<Result<_>>()?;
    filler.finish()?;
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

/// Fills a prefix module and its gates. AdapterHub's `.bin` files also hold the pool under
/// every layer's attention (`<layer>.prefix_tuning.pool.prefix_tunings...`), copies of the same
/// storage: they are accepted and not read.
fn fill_prefix<M: AdapterHost>(
    model: &M,
    mut prefix: PrefixModules,
    filler: &mut Filler<'_>,
    saved_name: &str,
) -> Result<PrefixModules> {
    let path = prefix_module_path(&model.prefix_pool_path(), saved_name);
    prefix.module = filler.fill(prefix.module, path, &prefix_name)?;
    for (placed, site) in prefix.sites.iter_mut().zip(model.attention_sites()) {
        let copies = prefix_module_path(
            &format!("{}.pool", model.attention_site_path(site.layer())),
            saved_name,
        );
        filler.accept_under(&copies);
        if let Some((_, Some(gate))) = placed {
            let path = prefix_gates_path(model, site.layer(), saved_name);
            *gate = filler.fill(gate.clone(), path, &prefix_gate_name)?;
        }
    }
    Ok(prefix)
}

/// The saved head, built for `model` and filled.
fn build_head<M: AdapterHost>(model: &M, saved: &SavedHead) -> Result<PredictionHead> {
    saved.envelope.check_hidden_size(model.hidden_size())?;
    let device = device_of(model)?;
    let head = PredictionHead::new(
        saved.config.clone(),
        model.hidden_size(),
        model.head_dropout(),
        &device,
    )
    .map_err(|e| in_file(&saved.envelope.path, e))?;
    let mut filler = Filler::new(&saved.weights, &device);
    let naming = |path: &str| head_name(path, |i| head.reference_index(i), |i| head.norm_index(i));
    let prefix = format!("heads.{}", saved.envelope.name);
    let filled = filler.fill(head.clone(), prefix, &naming)?;
    filler.finish()?;
    Ok(filled)
}
