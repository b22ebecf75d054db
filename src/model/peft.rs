//! Hugging Face PEFT's LoRA, VeRA and IA3 files on a host: the placement read off which linear
//! sites the file's keys name, and back.
//!
//! A PEFT LoRA is accepted when its placement is one AdapterHub's `LoRAConfig` can express (the
//! same projections in every layer that is not left out). PEFT's scaling is `lora_alpha / r`
//! (`lora_alpha / √r` with `use_rslora`); it is carried over exactly, and so is DoRA's
//! magnitude vector (`use_dora`).

use std::collections::BTreeSet;
use std::path::Path;

use super::build::{build_modules, device_of, install};
use super::transfer::{Filler, collect};
use super::vera::{VeraLayout, read_vera, vera_sites, write_vera};
use super::{AdapterHost, AdapterModel};
use crate::config::{
    AdapterConfig, AttnMatrix, CompositionMode, LinearLocation, LinearPosition, LoRAConfig,
    LoRAInit,
};
use crate::error::{Error, Result};
use crate::io::WeightsFile;
use crate::io::keys::{
    PEFT_IA3, PEFT_MAGNITUDE, ReferenceName, peft_ia3_name, peft_name, wrapped_module,
};
use crate::io::peft::{PeftRecord, PeftSettings, SavedPeft, read_peft, write_peft};
use crate::io::tensors::TensorMap;
use crate::methods::LoRA;
use crate::names::validate_name;

/// PEFT's names of `module`'s parameters; when `saving`, VeRA's shared matrices are written
/// once, as the model's (see `vera_aware`), while reading gives each module its slice under its
/// own names.
fn peft_naming(module: &LoRA, saving: bool) -> impl Fn(&str) -> Option<ReferenceName> + use<> {
    let ia3 = module.composition_mode() == CompositionMode::Scale;
    let scales_input = module.scales_input;
    let vera = saving && module.vera.is_some();
    move |path: &str| match path {
        _ if ia3 => peft_ia3_name(path, scales_input),
        "lora_a" | "lora_b" if vera => Some(ReferenceName::nowhere()),
        _ => peft_name(path),
    }
}

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
            lora.map(|lora| {
                let naming = peft_naming(&lora, false);
                filler.fill(lora, prefix, &naming)
            })
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
        ia3,
    } = saved.settings;
    let feedforward = match ia3 {
        true => input_scaled_sites(model, &saved.weights)?,
        false => BTreeSet::new(),
    };
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
        composition_mode: match ia3 {
            true => CompositionMode::Scale,
            false => CompositionMode::Add,
        },
        init_weights: match (vera_d_initial, ia3) {
            (Some(_), _) => LoRAInit::Vera,
            (None, true) => LoRAInit::Ia3,
            (None, false) => LoRAInit::Lora,
        },
        ia3_input_scaling: !feedforward.is_empty(),
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
        let scales_input = config.scales_input_at(location.position, model.ffn_down_position());
        if scales_input != feedforward.contains(&location) {
            return Err(Error::Unsupported(format!(
                "PEFT IA3 that scales the input of `{}` but not that of every wrapped projection \
                 back to the hidden width, or the input of another projection ({}): IA3 here \
                 scales the inputs of the attention and feed-forward output projections only",
                module_path(model, location),
                saved.weights.path.display(),
            )));
        }
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
            ".ia3_l",
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

/// The wrapped sites whose IA3 vector in `file` is `[1, d_input]` (PEFT's
/// `feedforward_modules`, which scale their input) rather than `[d_output, 1]`.
fn input_scaled_sites<M: AdapterHost>(
    model: &M,
    file: &WeightsFile,
) -> Result<BTreeSet<LinearLocation>> {
    let mut scaled = BTreeSet::new();
    for site in model.linear_sites() {
        let key = format!("{}.{PEFT_IA3}", module_path(model, site.location()));
        let Some(tensor) = file.tensors.get(&key) else {
            continue;
        };
        let (d_input, d_output) = site.dims();
        match tensor.shape.as_slice() {
            [d, 1] if *d == d_output => {}
            [1, d] if *d == d_input => {
                scaled.insert(site.location());
            }
            other => {
                return Err(Error::format(
                    &file.path,
                    format!(
                        "`{key}` is {other:?}; IA3 on a {d_input} → {d_output} projection is \
                         [{d_output}, 1], or [1, {d_input}] when it scales the input"
                    ),
                ));
            }
        }
    }
    Ok(scaled)
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
    let lora = &lora.as_saved();
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
    let mut feedforward = Vec::new();
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
                module.as_saved().as_ref(),
                path.clone(),
                &peft_naming(module, true),
                &mut tensors,
            );
            if module.scales_input {
                feedforward.push(path.clone());
            }
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
    let ia3 = lora.composition_mode == CompositionMode::Scale;
    if ia3 {
        // PEFT's IA3 has no alpha: `l` carries it.
        let alpha = lora.alpha as f32;
        for (key, tensor) in tensors.iter_mut() {
            if key.ends_with(&format!(".{PEFT_IA3}")) {
                tensor.values.iter_mut().for_each(|v| *v *= alpha);
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
            ia3,
        },
        fan_in_fan_out: model.fan_in_fan_out(),
        targets,
        feedforward,
        info: model.model_info(),
        tensors,
    };
    write_peft(dir, record)
}
