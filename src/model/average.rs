//! `average_adapter`: a new adapter from a weighted combination of adapters of one config
//! (AdapterHub's `average_adapter`).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::AdapterModel;
use super::build::{AdapterModules, PrefixModules, build_modules, device_of, install};
use crate::config::{AdapterConfig, CompositionMode, LinearPosition};
use crate::error::{Error, Result};
use crate::methods::LoRA;
use crate::names::validate_name;

/// How [`AdapterModel::average_adapter`] combines adapters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AverageStrategy {
    /// Weighted sum of every parameter (AdapterHub's `linear`; for LoRA this averages `A` and
    /// `B` separately, which is not the average of the updates).
    Linear,
    /// LoRA only: like `Linear`, but a negative weight negates only `B` (`A` takes `|w|`), so
    /// the update is subtracted (AdapterHub's `lora_linear_only_negate_b`).
    LoraLinearOnlyNegateB,
    /// LoRA only: the weighted sum of the updates `ΔW = B A`, factorised back to rank `rank` by
    /// SVD (AdapterHub's `lora_delta_w_svd`): `A = Vᵀ`, `B = U·S`.
    LoraDeltaWSvd {
        /// Rank of the averaged adapter.
        rank: usize,
    },
}

/// Builds adapter `name` as the combination of `sources` (all with the same config), without
/// changing the model until it is complete, and installs it.
pub(crate) fn average_adapter<M: AdapterModel>(
    model: &mut M,
    name: &str,
    sources: &[(&str, f64)],
    strategy: AverageStrategy,
) -> Result<()> {
    validate_name(name)?;
    if model.has_adapter(name) {
        return Err(Error::DuplicateAdapter(name.to_string()));
    }
    let config = averaged_config(model, sources, strategy)?;
    check_fused_sources(model, sources, strategy)?;
    check_unshared_sources(model, sources)?;
    let modules = build_modules(model, &config, Some(0))?;
    let modules = average_modules(model, modules, sources, strategy)?;
    install(model, name, config, modules, None);
    Ok(())
}

/// `modules` (built for the averaged config) with every parameter combined from the sources'
/// modules at the same place.
fn average_modules<M: AdapterModel>(
    model: &M,
    modules: AdapterModules,
    sources: &[(&str, f64)],
    strategy: AverageStrategy,
) -> Result<AdapterModules> {
    let residual = modules
        .residual
        .into_iter()
        .zip(model.residual_sites())
        .map(|(module, site)| {
            module.map(|m| linear_average(m, sources, |n| site.adapters().get(n)))
        })
        .collect();
    let phms = model.shared_parameters().map(|shared| shared.phm());
    let shared_phm = modules
        .shared_phm
        .map(|m| linear_average(m, sources, |n| phms.and_then(|p| p.get(n))));
    // The SVD runs on the model's backend without gradient tracking.
    let host = device_of(model)?.without_autodiff();
    let weights: Vec<f64> = sources.iter().map(|(_, w)| *w).collect();
    let linear = modules
        .linear
        .into_iter()
        .zip(model.linear_sites())
        .map(|(module, site)| {
            let Some(module) = module else {
                return Ok(None);
            };
            let found: Vec<ParamValues> = sources
                .iter()
                .filter_map(|(n, _)| site.loras().get(*n).map(values_of::<LoRA>))
                .collect();
            let averaged = average_lora(&found, &weights, strategy, &host)?;
            Ok(Some(replaced(module, averaged)))
        })
        .collect::<Result<_>>()?;
    let prefix = modules
        .prefix
        .map(|prefix| average_prefix(model, prefix, sources));
    let prompts = model.embedding_site().map(|site| site.prompts());
    let prompt = modules
        .prompt
        .map(|m| linear_average(m, sources, |n| prompts.and_then(|p| p.get(n))));
    let invertibles = model.embedding_site().map(|site| site.invertibles());
    let invertible = modules
        .invertible
        .map(|m| linear_average(m, sources, |n| invertibles.and_then(|i| i.get(n))));
    // AdapterHub averages every tensor of the state dict, an orthogonal projection's base too.
    let reft = modules
        .reft
        .into_iter()
        .zip(model.hidden_sites())
        .map(|(module, site)| module.map(|m| linear_average(m, sources, |n| site.refts().get(n))))
        .collect();
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

/// A prefix module and its gates averaged linearly (the only way AdapterHub averages prefixes).
fn average_prefix<M: AdapterModel>(
    model: &M,
    mut prefix: PrefixModules,
    sources: &[(&str, f64)],
) -> PrefixModules {
    let pool = model.prefix_pool().map(|pool| pool.prefixes());
    prefix.module = linear_average(prefix.module, sources, |n| pool.and_then(|p| p.get(n)));
    for (placed, site) in prefix.sites.iter_mut().zip(model.attention_sites()) {
        if let Some((_, Some(gate))) = placed {
            *gate = linear_average(gate.clone(), sources, |n| site.gates().get(n));
        }
    }
    prefix
}

/// `module` with every parameter the weighted sum of those of the sources' modules that
/// `lookup` finds (AdapterHub's `linear`).
fn linear_average<'a, T: Module + 'a>(
    module: T,
    sources: &[(&str, f64)],
    lookup: impl Fn(&str) -> Option<&'a T>,
) -> T {
    let (found, weights): (Vec<ParamValues>, Vec<f64>) = sources
        .iter()
        .filter_map(|(n, w)| lookup(n).map(|m| (values_of(m), *w)))
        .unzip();
    replaced(module, weighted_sum(&found, &weights, |_| false))
}

/// The sources' shared config, with the rank of `LoraDeltaWSvd`; checks weights and strategy.
fn averaged_config<M: AdapterModel>(
    model: &M,
    sources: &[(&str, f64)],
    strategy: AverageStrategy,
) -> Result<AdapterConfig> {
    let Some((first, _)) = sources.first() else {
        return Err(Error::InvalidSetup(
            "average_adapter needs at least one adapter".into(),
        ));
    };
    let mut config = model.adapter_config(first)?.clone();
    for (source, weight) in sources {
        let other = model.adapter_config(source)?;
        if !weight.is_finite() {
            return Err(Error::InvalidSetup(format!(
                "weight of `{source}` is {weight}"
            )));
        }
        if *other != config {
            return Err(Error::InvalidSetup(format!(
                "average_adapter combines adapters of one config; `{source}` differs from `{first}`"
            )));
        }
    }
    let plain_lora = match &config {
        AdapterConfig::Lora(lora) => {
            let plain = lora.composition_mode == CompositionMode::Add && !lora.use_gating;
            plain && !lora.use_dora && !lora.is_vera()
        }
        _ => false,
    };
    if strategy != AverageStrategy::Linear && !plain_lora {
        return Err(Error::InvalidSetup(format!(
            "{strategy:?} averages plain LoRA adapters (not gated, not DoRA: a magnitude has no \
             share in A or B or ΔW, not VeRA: its A and B are frozen); `{first}` is not one"
        )));
    }
    if let (AverageStrategy::LoraDeltaWSvd { rank }, AdapterConfig::Lora(lora)) =
        (strategy, &mut config)
    {
        if rank == 0 {
            return Err(Error::invalid("svd_rank", 0, "must be at least 1"));
        }
        // Keep the update's scaling alpha/r unchanged at the new rank.
        lora.alpha = lora.alpha / lora.r as f64 * rank as f64;
        lora.r = rank;
    }
    Ok(config)
}

/// Sources that share MTL-LoRA factors hold them at the site, not in their modules: they are
/// averaged after `unshare_parameters`.
fn check_unshared_sources<M: AdapterModel>(model: &M, sources: &[(&str, f64)]) -> Result<()> {
    for site in model.linear_sites() {
        for (source, _) in sources {
            if site
                .loras()
                .get(*source)
                .is_some_and(|lora| lora.shared.is_some())
            {
                return Err(Error::InvalidSetup(format!(
                    "average_adapter: `{source}` shares its MTL-LoRA factors; call \
                     unshare_parameters first"
                )));
            }
        }
    }
    Ok(())
}

/// LoRAs on a fused projection average only in AdapterHub's per-block form, and not by
/// `ΔW` (AdapterHub's GPT-2 has no `lora_delta_w_svd` either): a PEFT LoRA on the whole
/// projection has other shapes than the per-block module the config builds.
fn check_fused_sources<M: AdapterModel>(
    model: &M,
    sources: &[(&str, f64)],
    strategy: AverageStrategy,
) -> Result<()> {
    for site in model.linear_sites() {
        if site.location().position != LinearPosition::QueryKeyValue {
            continue;
        }
        for (source, _) in sources {
            let Some(lora) = site.loras().get(*source) else {
                continue;
            };
            let reason = match (strategy, &lora.blocks) {
                (_, None) => "its LoRA there is PEFT's, one A for the whole projection",
                (AverageStrategy::LoraDeltaWSvd { .. }, Some(_)) => {
                    "a per-block LoRA there has no single ΔW to decompose"
                }
                _ => continue,
            };
            return Err(Error::InvalidSetup(format!(
                "average_adapter: `{source}` has a LoRA on the fused projection at {}: {reason}",
                site.location()
            )));
        }
    }
    Ok(())
}

/// One LoRA site's averaged parameters (`lora_a`, `lora_b` in visiting order).
fn average_lora(
    found: &[ParamValues],
    weights: &[f64],
    strategy: AverageStrategy,
    host: &Device,
) -> Result<Vec<Vec<f32>>> {
    Ok(match strategy {
        AverageStrategy::Linear => weighted_sum(found, weights, |_| false),
        // `lora_a` (parameter 0) takes |w|, so a negative weight negates only B.
        AverageStrategy::LoraLinearOnlyNegateB => weighted_sum(found, weights, |index| index == 0),
        AverageStrategy::LoraDeltaWSvd { rank } => svd_average(found, weights, rank, host)?,
    })
}

/// A module's float parameters in visiting order: (shape, values).
pub(super) type ParamValues = Vec<(Vec<usize>, Vec<f32>)>;

/// Collects every float parameter of a module, in visiting order, as host values.
struct Values(ParamValues);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        let shape = data.shape().to_vec();
        self.0
            .push((shape, data.try_to_vec::<f32>().unwrap_or_default()));
    }
}

/// Replaces every float parameter, in visiting order, by the given values.
struct Replace(std::vec::IntoIter<Vec<f32>>);

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.0.next() {
            Some(values) => param.map(|t| {
                let shape = t.shape();
                Tensor::from_data(TensorData::new(values, shape), &t.device())
            }),
            None => param,
        }
    }
}

pub(super) fn values_of<T: Module>(module: &T) -> ParamValues {
    let mut values = Values(Vec::new());
    module.visit(&mut values);
    values.0
}

pub(super) fn replaced<T: Module>(module: T, values: Vec<Vec<f32>>) -> T {
    module.map(&mut Replace(values.into_iter()))
}

/// `Σ wᵢ·pᵢ` per parameter, accumulated in f64; parameters for which `absolute(index)` holds
/// use `|wᵢ|`.
fn weighted_sum(
    sources: &[ParamValues],
    weights: &[f64],
    absolute: impl Fn(usize) -> bool,
) -> Vec<Vec<f32>> {
    let Some(first) = sources.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|index| {
            let mut sum = vec![0.0f64; first[index].1.len()];
            for (source, weight) in sources.iter().zip(weights) {
                let w = if absolute(index) {
                    weight.abs()
                } else {
                    *weight
                };
                for (s, v) in sum.iter_mut().zip(&source[index].1) {
                    *s += w * *v as f64;
                }
            }
            sum.into_iter().map(|v| v as f32).collect()
        })
        .collect()
}

/// `ΔW = Σ wᵢ Bᵢ Aᵢ` (torch orientation `[out, in]`), then `A = Vᵀ[:rank]`, `B = U[:, :rank]·S`.
/// Our `A` is `[in, r]` and `B` `[r, out]`, the transposes.
fn svd_average(
    sources: &[ParamValues],
    weights: &[f64],
    rank: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let (a0, b0) = (&sources[0][0], &sources[0][1]);
    let (d_in, d_out) = (a0.0[0], b0.0[1]);
    if rank > d_in.min(d_out) {
        return Err(Error::invalid(
            "svd_rank",
            rank,
            format!(
                "must be at most min(d_input, d_output) = {}",
                d_in.min(d_out)
            ),
        ));
    }
    // Our ΔW = A B is [in, out]; accumulate in f64.
    let mut delta = vec![0.0f64; d_in * d_out];
    for (source, weight) in sources.iter().zip(weights) {
        let (a, b) = (&source[0].1, &source[1].1);
        let r = source[0].0[1];
        for i in 0..d_in {
            for k in 0..r {
                let aik = a[i * r + k] as f64 * weight;
                for j in 0..d_out {
                    delta[i * d_out + j] += aik * b[k * d_out + j] as f64;
                }
            }
        }
    }
    let (a, b) = factorize(&delta, d_in, d_out, rank, device);
    Ok(vec![a, b])
}

/// `ΔW` (ours, `[in, out]`) factorised by a truncated SVD as AdapterHub and PEFT do on torch's
/// `[out, in]` = `U S Vᵀ`: their `A = Vᵀ[:rank]`, `B = U[:, :rank]·S`, whose transposes ours are
/// (`A` `[in, rank]`, `B` `[rank, out]`). `rank` is at most `min(in, out)`.
pub(super) fn factorize(
    delta: &[f64],
    d_in: usize,
    d_out: usize,
    rank: usize,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let torch_delta: Vec<f32> = (0..d_out)
        .flat_map(|j| (0..d_in).map(move |i| (i, j)))
        .map(|(i, j)| delta[i * d_out + j] as f32)
        .collect();
    // burn's SVD runs on the backend without autodiff.
    let device = device.clone().without_autodiff();
    let matrix = Tensor::<2>::from_data(TensorData::new(torch_delta, [d_out, d_in]), &device);
    let (u, s, vt) = burn::linalg::svd::<2, 1>(matrix, 200);
    let u: Vec<f32> = u.into_data().try_to_vec().unwrap_or_default(); // [out, k]
    let s: Vec<f32> = s.into_data().try_to_vec().unwrap_or_default(); // [k]
    let vt: Vec<f32> = vt.into_data().try_to_vec().unwrap_or_default(); // [k, in]
    let k = s.len();
    let a: Vec<f32> = (0..d_in)
        .flat_map(|i| (0..rank).map(move |c| (i, c)))
        .map(|(i, c)| vt[c * d_in + i])
        .collect();
    let b: Vec<f32> = (0..rank)
        .flat_map(|c| (0..d_out).map(move |j| (c, j)))
        .map(|(c, j)| u[j * k + c] * s[c])
        .collect();
    (a, b)
}
