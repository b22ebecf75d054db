//! `add_weighted_adapter`: a new LoRA from PEFT's combinations of LoRA adapters (PEFT's
//! `LoraModel.add_weighted_adapter`).

use super::AdapterModel;
use super::average::{factorize, replaced, values_of};
use super::build::{build_modules, device_of, install};
use super::task_merge::merge_tasks;
use crate::config::{AdapterConfig, CompositionMode, LoRAConfig};
use crate::error::{Error, Result};
use crate::methods::LoRA;
use crate::methods::init::InitRng;
use crate::names::validate_name;

/// How [`AdapterModel::add_weighted_adapter`] combines LoRA adapters (PEFT's
/// `combination_type`). Every combination gives the new adapter `alpha = r`, so its scaling is 1
/// and its factors hold the sources' scalings `sᵢ` (`alpha/r`, or `alpha/√r` with rsLoRA).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combination {
    /// `cat`: the sources' factors side by side, `A = [w₁s₁A₁, w₂s₂A₂, …]`, `B = [B₁; B₂; …]`: the
    /// update is exactly `Σ wᵢ sᵢ Aᵢ Bᵢ`, at rank `Σ rᵢ`.
    Cat,
    /// `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`: the `A`s and the `B`s
    /// combined entry by entry, `A` weighted by `sign(wᵢsᵢ)·√|wᵢsᵢ|` and `B` by `√|wᵢsᵢ|`; the
    /// sources must share their rank, which the new adapter keeps. Only task arithmetic with a
    /// single source is exact; the rest approximate `Σ wᵢ sᵢ Aᵢ Bᵢ`.
    Factors(TaskMerge),
    /// `svd`, `ties_svd`, `dare_linear_svd`, `dare_ties_svd`, `magnitude_prune_svd`: the
    /// updates `ΔWᵢ = sᵢ Aᵢ Bᵢ` combined, then factorised by a truncated SVD (`A = Vᵀ[:rank]`,
    /// `B = U[:, :rank]·S` in torch's layout) to `rank`, by default the sources' largest.
    Svd {
        /// How the updates are combined.
        merge: TaskMerge,
        /// The new adapter's rank (PEFT's `svd_rank`); at most the projections' smaller side.
        rank: Option<usize>,
    },
}

/// How one tensor per source becomes one (PEFT's `merge_utils`), with the weights `wᵢ` given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskMerge {
    /// `Σ wᵢ tᵢ` (task arithmetic: PEFT's `linear` and `svd`).
    TaskArithmetic,
    /// Each `tᵢ` keeps its `⌊density·n⌋` largest magnitudes, then `Σ wᵢ tᵢ`.
    MagnitudePrune {
        /// The fraction kept, in `[0, 1]`.
        density: f64,
    },
    /// TIES (Yadav et al., 2023): magnitude pruning, then each entry's majority sign is
    /// elected over the pruned tasks and the weighted entries that agree with it are averaged.
    Ties {
        /// The fraction kept, in `[0, 1]`.
        density: f64,
        /// How the sign is elected.
        majority_sign: MajoritySign,
    },
    /// DARE (Yu et al., 2024): each entry kept with probability `density` and rescaled by
    /// `1/density`, then `Σ wᵢ tᵢ`. The draws come from the device's generator
    /// (`Device::seed` makes them reproducible).
    DareLinear {
        /// The probability of keeping an entry, in `[0, 1]`.
        density: f64,
    },
    /// DARE's random drop, then TIES' sign election and disjoint mean.
    DareTies {
        /// The probability of keeping an entry, in `[0, 1]`.
        density: f64,
        /// How the sign is elected.
        majority_sign: MajoritySign,
    },
}

/// TIES' sign election (PEFT's `majority_sign_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MajoritySign {
    /// The sign of the sum of the entries (`"total"`).
    #[default]
    Total,
    /// The sign held by more entries (`"frequency"`).
    Frequency,
}

impl Combination {
    /// PEFT's name of this combination (`"dare_ties_svd"`, ...).
    pub fn peft_name(&self) -> &'static str {
        let merge = match self {
            Combination::Cat => return "cat",
            Combination::Factors(merge) | Combination::Svd { merge, .. } => merge,
        };
        let svd = matches!(self, Combination::Svd { .. });
        match (merge, svd) {
            (TaskMerge::TaskArithmetic, false) => "linear",
            (TaskMerge::TaskArithmetic, true) => "svd",
            (TaskMerge::MagnitudePrune { .. }, false) => "magnitude_prune",
            (TaskMerge::MagnitudePrune { .. }, true) => "magnitude_prune_svd",
            (TaskMerge::Ties { .. }, false) => "ties",
            (TaskMerge::Ties { .. }, true) => "ties_svd",
            (TaskMerge::DareLinear { .. }, false) => "dare_linear",
            (TaskMerge::DareLinear { .. }, true) => "dare_linear_svd",
            (TaskMerge::DareTies { .. }, false) => "dare_ties",
            (TaskMerge::DareTies { .. }, true) => "dare_ties_svd",
        }
    }
}

impl TaskMerge {
    fn density(&self) -> Option<f64> {
        match *self {
            TaskMerge::TaskArithmetic => None,
            TaskMerge::MagnitudePrune { density }
            | TaskMerge::Ties { density, .. }
            | TaskMerge::DareLinear { density }
            | TaskMerge::DareTies { density, .. } => Some(density),
        }
    }
}

/// One source at one linear site: its factors (ours, `A` `[in, r]`, `B` `[r, out]`), rank,
/// scaling and weight.
struct Source {
    a: Vec<f32>,
    b: Vec<f32>,
    r: usize,
    scaling: f64,
    weight: f64,
}

/// Builds adapter `name` from `sources` by `combination`, without changing the model until it
/// is complete, and installs it.
pub(crate) fn add_weighted_adapter<M: AdapterModel>(
    model: &mut M,
    name: &str,
    sources: &[(&str, f64)],
    combination: Combination,
) -> Result<()> {
    validate_name(name)?;
    if model.has_adapter(name) {
        return Err(Error::DuplicateAdapter(name.to_string()));
    }
    // PEFT combines a single adapter linearly, whatever was asked.
    let combination = match sources.len() {
        1 => Combination::Factors(TaskMerge::TaskArithmetic),
        _ => combination,
    };
    let configs = source_configs(model, sources)?;
    let config = merged_config(&configs, sources, combination, model)?;
    let mut modules = build_modules(model, &AdapterConfig::Lora(config.clone()), Some(0))?;
    let device = device_of(model)?;
    let mut rng = InitRng::from_device(&device);
    let host = device.without_autodiff();
    for (module, site) in modules.linear.iter_mut().zip(model.linear_sites()) {
        let Some(built) = module.take() else {
            continue;
        };
        let (d_input, d_output) = site.dims();
        let found: Vec<Source> = sources
            .iter()
            .zip(&configs)
            .filter_map(|((source, weight), source_config)| {
                let lora = site.loras().get(*source)?;
                let [a, b] = values_of::<LoRA>(lora).try_into().ok()?;
                Some(Source {
                    r: source_config.r,
                    scaling: source_config.scaling(),
                    weight: *weight,
                    a: a.1,
                    b: b.1,
                })
            })
            .collect();
        let (a, b) = match combination {
            Combination::Cat => concatenated(&found, d_input, d_output),
            Combination::Factors(merge) => entrywise(&found, merge, &mut rng),
            Combination::Svd { merge, .. } => {
                let delta = combined_update(&found, merge, d_input, d_output, &mut rng);
                factorize(&delta, d_input, d_output, config.r, &host)
            }
        };
        *module = Some(replaced(built, vec![a, b]));
    }
    install(model, name, AdapterConfig::Lora(config), modules, None);
    Ok(())
}

/// The sources' LoRA configs, checked: plain LoRA (added, not gated, not DoRA, not MTL-LoRA),
/// finite weights, one placement, and modules PEFT's form can hold (not AdapterHub's
/// per-block LoRA on a fused projection, not shared factors).
fn source_configs<M: AdapterModel>(model: &M, sources: &[(&str, f64)]) -> Result<Vec<LoRAConfig>> {
    let invalid = |reason: String| Error::InvalidSetup(format!("add_weighted_adapter: {reason}"));
    if sources.is_empty() {
        return Err(invalid("needs at least one adapter".into()));
    }
    let mut configs: Vec<LoRAConfig> = Vec::with_capacity(sources.len());
    for (source, weight) in sources {
        let config = match model.adapter_config(source)? {
            AdapterConfig::Lora(lora)
                if lora.composition_mode == CompositionMode::Add
                    && !lora.use_gating
                    && !lora.use_dora
                    && !lora.is_vera()
                    && lora.multi_task.is_none() =>
            {
                lora.clone()
            }
            _ => {
                return Err(invalid(format!(
                    "`{source}` is not a plain LoRA (PEFT combines LoRAs without IA3, gates, DoRA, \
                     VeRA or MTL-LoRA)"
                )));
            }
        };
        if !weight.is_finite() {
            return Err(invalid(format!("the weight of `{source}` is {weight}")));
        }
        let places = |c: &LoRAConfig, site: &crate::sites::LinearSite| c.places_at(site.location());
        if let Some(first) = configs.first()
            && model
                .linear_sites()
                .any(|site| places(first, site) != places(&config, site))
        {
            return Err(invalid(format!(
                "`{source}` wraps other projections than `{}`",
                sources[0].0
            )));
        }
        configs.push(config);
    }
    for site in model.linear_sites() {
        for (source, _) in sources {
            if let Some(lora) = site.loras().get(*source)
                && (lora.blocks.is_some() || lora.shared.is_some())
            {
                return Err(invalid(format!(
                    "`{source}` at {} holds per-block or shared factors, which PEFT's combinations \
                     do not have",
                    site.location()
                )));
            }
        }
    }
    Ok(configs)
}

/// The new adapter's config: the sources' placement at the combination's rank, `alpha = r`.
fn merged_config<M: AdapterModel>(
    configs: &[LoRAConfig],
    sources: &[(&str, f64)],
    combination: Combination,
    model: &M,
) -> Result<LoRAConfig> {
    let ranks: Vec<usize> = configs.iter().map(|c| c.r).collect();
    let rank = match combination {
        Combination::Cat => ranks.iter().sum(),
        Combination::Factors(_) => {
            if let Some(i) = ranks.iter().position(|r| *r != ranks[0]) {
                return Err(Error::InvalidSetup(format!(
                    "add_weighted_adapter: `{}` combines A and B entry by entry, so the ranks must \
                     agree; `{}` has r = {} and `{}` r = {} (use `cat` or an SVD combination)",
                    combination.peft_name(),
                    sources[0].0,
                    ranks[0],
                    sources[i].0,
                    ranks[i]
                )));
            }
            ranks[0]
        }
        Combination::Svd { rank, .. } => {
            let rank = rank.unwrap_or_else(|| ranks.iter().copied().max().unwrap_or(1));
            let smallest = model
                .linear_sites()
                .map(|s| s.dims().0.min(s.dims().1))
                .min()
                .unwrap_or(rank);
            if rank == 0 || rank > smallest {
                return Err(Error::invalid(
                    "svd_rank",
                    rank,
                    format!("must be between 1 and the projections' smaller side, {smallest}"),
                ));
            }
            rank
        }
    };
    let merge = match combination {
        Combination::Cat => None,
        Combination::Factors(merge) | Combination::Svd { merge, .. } => Some(merge),
    };
    if let Some(density) = merge.and_then(|m| m.density())
        && !(0.0..=1.0).contains(&density)
    {
        return Err(Error::invalid(
            "density",
            density,
            "the fraction of entries kept, in [0, 1]",
        ));
    }
    Ok(LoRAConfig {
        r: rank,
        alpha: rank as f64,
        use_rslora: false,
        init_weights_seed: None,
        ..configs[0].clone()
    })
}

/// `cat`: `A = [w₁s₁A₁, …]` (columns), `B = [B₁; …]` (rows).
fn concatenated(found: &[Source], d_input: usize, d_output: usize) -> (Vec<f32>, Vec<f32>) {
    let rank: usize = found.iter().map(|s| s.r).sum();
    let mut a = vec![0.0f32; d_input * rank];
    let mut offset = 0;
    for source in found {
        let factor = (source.weight * source.scaling) as f32;
        for i in 0..d_input {
            for k in 0..source.r {
                a[i * rank + offset + k] = source.a[i * source.r + k] * factor;
            }
        }
        offset += source.r;
    }
    let b = found.iter().flat_map(|s| s.b.iter().copied()).collect();
    debug_assert_eq!(
        found.iter().map(|s| s.b.len()).sum::<usize>(),
        rank * d_output
    );
    (a, b)
}

/// The `A`s and the `B`s merged separately, weighted by `sign(ws)·√|ws|` and `√|ws|`.
fn entrywise(found: &[Source], merge: TaskMerge, rng: &mut InitRng) -> (Vec<f32>, Vec<f32>) {
    let root = |s: &Source| (s.weight * s.scaling).abs().sqrt();
    let weights_a: Vec<f32> = found
        .iter()
        .map(|s| {
            (root(s)
                * if s.weight * s.scaling >= 0.0 {
                    1.0
                } else {
                    -1.0
                }) as f32
        })
        .collect();
    let weights_b: Vec<f32> = found.iter().map(|s| root(s) as f32).collect();
    let a: Vec<Vec<f32>> = found.iter().map(|s| s.a.clone()).collect();
    let b: Vec<Vec<f32>> = found.iter().map(|s| s.b.clone()).collect();
    (
        merge_tasks(&a, &weights_a, merge, rng),
        merge_tasks(&b, &weights_b, merge, rng),
    )
}

/// `merge` of the updates `ΔWᵢ = sᵢ Aᵢ Bᵢ` (ours, `[in, out]`) weighted by `wᵢ`.
fn combined_update(
    found: &[Source],
    merge: TaskMerge,
    d_input: usize,
    d_output: usize,
    rng: &mut InitRng,
) -> Vec<f64> {
    let updates: Vec<Vec<f32>> = found
        .iter()
        .map(|s| {
            let mut delta = vec![0.0f32; d_input * d_output];
            for i in 0..d_input {
                for k in 0..s.r {
                    let aik = s.a[i * s.r + k];
                    for j in 0..d_output {
                        delta[i * d_output + j] += aik * s.b[k * d_output + j];
                    }
                }
            }
            delta
                .iter()
                .map(|v| (*v as f64 * s.scaling) as f32)
                .collect()
        })
        .collect();
    let weights: Vec<f32> = found.iter().map(|s| s.weight as f32).collect();
    merge_tasks(&updates, &weights, merge, rng)
        .into_iter()
        .map(f64::from)
        .collect()
}
