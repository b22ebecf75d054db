//! Hugging Face PEFT's LoRA files on a host: the placement read off which linear sites the
//! file's keys name, and back.
//!
//! A PEFT LoRA is accepted when its placement is one AdapterHub's `LoRAConfig` can express (the
//! same projections in every layer that is not left out). PEFT's scaling is `lora_alpha / r`
//! (`lora_alpha / √r` with `use_rslora`); it is carried over exactly, and so is DoRA's
//! magnitude vector (`use_dora`).

use std::collections::BTreeSet;
use std::path::Path;

use super::build::{build_modules, device_of, install};
use super::transfer::{Filler, collect};
use super::vera::{VeraLayout, read_vera, vera_aware, vera_sites, write_vera};
use super::{AdapterHost, AdapterModel};
use crate::config::{
    AdapterConfig, AttnMatrix, CompositionMode, LinearLocation, LinearPosition, LoRAConfig,
    LoRAInit,
};
use crate::error::{Error, Result};
use crate::io::WeightsFile;
use crate::io::keys::{PEFT_MAGNITUDE, peft_name, wrapped_module};
use crate::io::peft::{PeftRecord, PeftSettings, SavedPeft, read_peft, write_peft};
use crate::io::tensors::TensorMap;
use crate::methods::LoRA;
use crate::names::validate_name;

/// The module a linear site wraps, in the host's transformers naming.
fn module_path<M: AdapterHost>(model: &M, location: LinearLocation) -> String {
    wrapped_module(&model.linear_site_path(location)).to_string()
}

/// Loads the PEFT LoRA in `dir` as adapter `name`, all or nothing.
pub(crate) fn load<M: AdapterModel>(model: &mut M, dir: &Path, name: &str) -> Result<()> {
    validate_name(name)?;
    if model.has_adapter(name) {
        return Err(Error::DuplicateAdapter(name.to_string()));
    }
    let saved = read_peft(dir)?;
    let config = AdapterConfig::Lora(derive_config(model, &saved)?);
    config.validate()?;
    let mut modules = build_modules(model, &config, Some(0))?;
    let device = device_of(model)?;
    let AdapterConfig::Lora(lora_config) = &config else {
        unreachable!("derive_config builds a LoRA config")
    };
    for (module, site) in modules.linear.iter_mut().zip(model.linear_sites()) {
        if module.is_some() && site.location().position == LinearPosition::QueryKeyValue {
            // PEFT's LoRA covers the whole fused projection, not AdapterHub's blocks.
            let (d_input, d_output) = site.dims();
            let lora = LoRA::new(lora_config, d_input, d_output, &device)?;
            *module = Some(match lora_config.use_dora {
                true => lora.with_magnitude(site.unmerged_weight()),
                false => lora,
            });
        }
    }
    let vera = vera_sites(model, modules.linear.iter().map(Option::as_ref), |site| {
        module_path(model, site.location())
    });
    let weights = read_vera(&saved.weights, &VeraLayout::peft(), &vera)?;
    let mut filler = Filler::new(&weights, &device);
    modules.linear = modules
        .linear
        .into_iter()
        .zip(model.linear_sites())
        .map(|(lora, site)| {
            let prefix = module_path(model, site.location());
            lora.map(|lora| filler.fill(lora, prefix, &peft_name))
                .transpose()
        })
        .collect::<Result<_>>()?;
    filler.finish()?;
    install(model, name, config, modules, None);
    Ok(())
}

/// The LoRA config that places modules exactly where the file has them.
fn derive_config<M: AdapterHost>(model: &M, saved: &SavedPeft) -> Result<LoRAConfig> {
    let wrapped = wrapped_sites(model, &saved.weights)?;
    let layers: BTreeSet<usize> = wrapped.iter().map(|l| l.layer).collect();
    let has = |position| wrapped.iter().any(|l| l.position == position);
    let fused = has(LinearPosition::QueryKeyValue);
    let attn_matrices: Vec<AttnMatrix> = [
        (LinearPosition::Query, AttnMatrix::Q),
        (LinearPosition::Key, AttnMatrix::K),
        (LinearPosition::Value, AttnMatrix::V),
        (LinearPosition::AttentionOutput, AttnMatrix::O),
    ]
    .into_iter()
    .filter(|(p, m)| has(*p) || fused && *m != AttnMatrix::O)
    .map(|(_, m)| m)
    .collect();
    let PeftSettings {
        r,
        lora_alpha,
        dropout,
        rslora,
        dora,
        vera_d_initial,
    } = saved.settings;
    let config = LoRAConfig {
        selfattn_lora: !attn_matrices.is_empty(),
        intermediate_lora: has(LinearPosition::Intermediate),
        output_lora: has(LinearPosition::Output),
        gate_lora: has(LinearPosition::Gate),
        leave_out: (0..model.num_layers())
            .filter(|l| !layers.contains(l))
            .collect(),
        r,
        alpha: lora_alpha,
        use_rslora: rslora,
        use_dora: dora,
        dropout,
        attn_matrices: if attn_matrices.is_empty() {
            LoRAConfig::lora().attn_matrices
        } else {
            attn_matrices
        },
        composition_mode: CompositionMode::Add,
        init_weights: match vera_d_initial {
            Some(_) => LoRAInit::Vera,
            None => LoRAInit::Lora,
        },
        // PEFT's `b` starts at zeros
        vera_d: vera_d_initial,
        vera_b: vera_d_initial.map(|_| 0.0),
        ..LoRAConfig::lora()
    };
    let placed = model
        .linear_sites()
        .map(|site| site.location())
        .filter(|location| config.places_at(*location));
    for location in placed {
        if !wrapped.contains(&location) {
            return Err(Error::Unsupported(format!(
                "PEFT LoRA that wraps a projection in some layers but not in others ({}: no \
                 tensors for `{}`)",
                saved.weights.path.display(),
                module_path(model, location)
            )));
        }
    }
    Ok(config)
}

/// The linear sites the file's keys (`<module>.lora_{A,B}.weight`) name.
fn wrapped_sites<M: AdapterHost>(
    model: &M,
    file: &WeightsFile,
) -> Result<BTreeSet<LinearLocation>> {
    let sites: Vec<(LinearLocation, String)> = model
        .linear_sites()
        .map(|site| (site.location(), module_path(model, site.location())))
        .collect();
    let mut wrapped = BTreeSet::new();
    let shared = VeraLayout::peft().shared;
    for key in file.tensors.keys().filter(|k| !shared.contains(k)) {
        let module = [
            ".lora_A.weight",
            ".lora_B.weight",
            ".vera_lambda_d",
            ".vera_lambda_b",
        ]
        .iter()
        .find_map(|suffix| key.strip_suffix(suffix))
        .or_else(|| key.strip_suffix(&format!(".{PEFT_MAGNITUDE}")))
        .ok_or_else(|| Error::UnexpectedTensor {
            path: file.path.clone(),
            key: key.clone(),
        })?;
        let (location, _) = sites.iter().find(|(_, m)| m == module).ok_or_else(|| {
            Error::Unsupported(format!(
                "PEFT LoRA on `{module}` ({}): the host wraps only the attention \
                 projections and the feed-forward projections it has sites for",
                file.path.display()
            ))
        })?;
        wrapped.insert(*location);
    }
    if wrapped.is_empty() {
        return Err(Error::format(&file.path, "no LoRA tensors"));
    }
    Ok(wrapped)
}

/// Writes LoRA adapter `name` of `model` as a PEFT LoRA into `dir`.
pub(crate) fn save<M: AdapterHost>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let config = model
        .registry()
        .config(name)
        .ok_or_else(|| Error::UnknownAdapter(name.to_string()))?;
    let unsupported =
        |what: &str| Error::Unsupported(format!("saving `{name}` in PEFT format: {what}"));
    let AdapterConfig::Lora(lora) = config else {
        return Err(unsupported(
            "PEFT's LoRA format holds plain LoRA adapters only",
        ));
    };
    if lora.composition_mode != CompositionMode::Add {
        return Err(unsupported("IA3 is a different PEFT type"));
    }
    if lora.use_gating {
        return Err(unsupported("PEFT has no gated LoRA"));
    }
    if lora.multi_task.is_some() {
        return Err(unsupported("PEFT has no MTL-LoRA"));
    }
    if lora.is_vera() && lora.use_dora {
        return Err(unsupported("PEFT's VeRA has no DoRA (DVoRA)"));
    }
    let mut tensors = TensorMap::new();
    let mut targets = Vec::new();
    for site in model.linear_sites() {
        if let Some(module) = site.loras().get(name) {
            if module.blocks.is_some() {
                return Err(unsupported(&format!(
                    "its LoRA on `{}` has one A per query/key/value block (AdapterHub's fused \
                     LoRA), PEFT's one for the whole projection; save it with save_adapter",
                    module_path(model, site.location())
                )));
            }
            let path = module_path(model, site.location());
            collect(
                module,
                path.clone(),
                &vera_aware(module, peft_name),
                &mut tensors,
            );
            targets.push(path);
        }
    }
    if lora.is_vera() {
        write_vera(model, name, &VeraLayout::peft(), &[], &mut tensors);
        // PEFT's VeRA has no scaling: `b` carries it.
        let scaling = lora.scaling() as f32;
        for (key, tensor) in tensors.iter_mut() {
            if key.ends_with(".vera_lambda_b") {
                tensor.values.iter_mut().for_each(|v| *v *= scaling);
            }
        }
    }
    let record = PeftRecord {
        settings: PeftSettings {
            r: lora.r,
            lora_alpha: lora.alpha,
            dropout: lora.dropout,
            rslora: lora.use_rslora,
            dora: lora.use_dora,
            vera_d_initial: lora.is_vera().then(|| lora.vera_d.unwrap_or(0.1)),
        },
        fan_in_fan_out: model.fan_in_fan_out(),
        targets,
        info: model.model_info(),
        tensors,
    };
    write_peft(dir, record)
}
