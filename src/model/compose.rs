//! Model-level composition: checking setups against the registry, AdapterFusion layers, and
//! averaging adapters into a new one.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::{AdapterModel, AdapterModules, build_modules, install};
use crate::composition::AdapterSetup;
use crate::config::{AdapterConfig, CompositionMode, FusionConfig};
use crate::error::{Error, Result};
use crate::methods::Fusion;

/// A fusion layer's record in the registry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FusionEntry {
    /// `"a,b"`.
    pub name: String,
    /// The fused adapters, in order.
    pub adapters: Vec<String>,
    pub config: FusionConfig,
}

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

/// Checks `setup` against the model: names exist, every `Fuse` has a fusion layer and fuses
/// bottleneck adapters only.
pub(crate) fn check_setup<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    setup.validate()?;
    if let Some(missing) = setup.names().into_iter().find(|n| !model.has_adapter(n)) {
        return Err(Error::UnknownAdapter(missing.to_string()));
    }
    check_fusions(model, setup)
}

fn check_fusions<M: AdapterModel>(model: &M, setup: &AdapterSetup) -> Result<()> {
    if let AdapterSetup::Fuse(_) = setup {
        let names = setup.names();
        if let Some(lora) = names.iter().find(|n| {
            model
                .adapter_config(n)
                .is_ok_and(|c| c.bottleneck().is_none())
        }) {
            return Err(Error::InvalidSetup(format!(
                "`{setup}`: AdapterFusion mixes bottleneck adapters; `{lora}` has none"
            )));
        }
        let name = names.join(",");
        if !model.registry().fusions.iter().any(|f| f.name == name) {
            return Err(Error::InvalidSetup(format!(
                "`{setup}` needs a fusion layer: call add_adapter_fusion({name:?}) or \
                 load_adapter_fusion first"
            )));
        }
    }
    setup
        .children()
        .iter()
        .try_for_each(|child| check_fusions(model, child))
}

/// The adapters a fusion spec names: a `Fuse` block, or a plain comma-separated list.
pub(crate) fn fusion_adapters(setup: &AdapterSetup) -> Result<Vec<String>> {
    let names: Vec<String> = match setup {
        AdapterSetup::Fuse(_) | AdapterSetup::Stack(_) => {
            setup.names().into_iter().map(str::to_string).collect()
        }
        AdapterSetup::Name(list) => list.split(',').map(|n| n.trim().to_string()).collect(),
        other => {
            return Err(Error::InvalidSetup(format!(
                "`{other}` does not name adapters to fuse; use Fuse[a, b]"
            )));
        }
    };
    if names.len() < 2 {
        return Err(Error::InvalidSetup(
            "AdapterFusion needs at least two adapters".into(),
        ));
    }
    Ok(names)
}

/// Builds the fusion layer for every residual site that holds all of `adapters`, without
/// changing the model.
pub(crate) fn build_fusions<M: AdapterModel>(
    model: &M,
    adapters: &[String],
    config: &FusionConfig,
) -> Result<Vec<Option<Fusion>>> {
    for name in adapters {
        let config = model.adapter_config(name)?;
        if config.bottleneck().is_none() {
            return Err(Error::InvalidSetup(format!(
                "AdapterFusion mixes bottleneck adapters; `{name}` has none"
            )));
        }
    }
    config.validate()?;
    let device = model.device()?;
    let mut fusions = Vec::new();
    let mut failure = None;
    model.visit_sites(&mut |site| {
        let holds_all = adapters.iter().all(|n| site.adapters().contains(n));
        fusions.push(match (holds_all, &failure) {
            (true, None) => Fusion::new(
                config,
                model.hidden_size(),
                model.attention_dropout(),
                &device,
            )
            .map_err(|e| failure = Some(e))
            .ok(),
            _ => None,
        });
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if fusions.iter().all(Option::is_none) {
        return Err(Error::InvalidSetup(format!(
            "no site holds all of {adapters:?}, so there is nothing to fuse"
        )));
    }
    Ok(fusions)
}

/// Installs fusion layers built by [`build_fusions`] and records them.
pub(crate) fn install_fusions<M: AdapterModel>(
    model: &mut M,
    adapters: Vec<String>,
    config: FusionConfig,
    fusions: Vec<Option<Fusion>>,
) {
    let name = adapters.join(",");
    let autodiff = model.device().is_ok_and(|d| d.is_autodiff());
    let mut fusions = fusions.into_iter();
    model.visit_sites_mut(&mut |site| {
        if let Some(Some(fusion)) = fusions.next() {
            site.insert_fusion(&name, if autodiff { fusion.train() } else { fusion });
        }
    });
    let registry = model.registry_mut();
    registry.fusions.retain(|f| f.name != name);
    registry.fusions.push(FusionEntry {
        name,
        adapters,
        config,
    });
}

/// Removes fusion `name` everywhere.
pub(crate) fn remove_fusion<M: AdapterModel>(model: &mut M, name: &str) {
    model.visit_sites_mut(&mut |site| {
        site.delete_fusion(name);
    });
    model.registry_mut().fusions.retain(|f| f.name != name);
}

/// `0.01·‖I − W_v‖²` summed over the fusion layers whose value projection trains.
pub(crate) fn fusion_regularization_loss<M: AdapterModel>(model: &M) -> Option<Tensor<1>> {
    let trainable: Vec<String> = model
        .registry()
        .fusions
        .iter()
        .filter(|f| f.config.regularization && model.registry().is_trainable(&f.name))
        .map(|f| f.name.clone())
        .collect();
    let mut total: Option<Tensor<1>> = None;
    model.visit_sites(&mut |site| {
        for (name, fusion) in site.fusions().iter() {
            if !trainable.iter().any(|t| t == name) {
                continue;
            }
            if let Some(loss) = fusion.regularization_loss() {
                total = Some(match total.take() {
                    Some(sum) => sum + loss,
                    None => loss,
                });
            }
        }
    });
    total
}

/// A module's float parameters in visiting order: (shape, values).
type ParamValues = Vec<(Vec<usize>, Vec<f32>)>;

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

fn values_of<T: Module>(module: &T) -> ParamValues {
    let mut values = Values(Vec::new());
    module.visit(&mut values);
    values.0
}

/// Builds adapter `name` as the combination of `sources` (all with the same config), without
/// changing the model, and installs it.
pub(crate) fn average_adapter<M: AdapterModel>(
    model: &mut M,
    name: &str,
    sources: &[(String, f64)],
    strategy: AverageStrategy,
) -> Result<()> {
    super::validate_name(name)?;
    if model.has_adapter(name) {
        return Err(Error::DuplicateAdapter(name.to_string()));
    }
    let Some((first, _)) = sources.first() else {
        return Err(Error::InvalidSetup(
            "average_adapter needs at least one adapter".into(),
        ));
    };
    let config = model.adapter_config(first)?.clone();
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
    let lora = config
        .lora()
        .filter(|_| matches!(config, AdapterConfig::Lora(_)));
    match strategy {
        AverageStrategy::Linear => {}
        AverageStrategy::LoraLinearOnlyNegateB | AverageStrategy::LoraDeltaWSvd { .. } => {
            if lora.is_none_or(|l| l.composition_mode != CompositionMode::Add || l.use_gating) {
                return Err(Error::InvalidSetup(format!(
                    "{strategy:?} averages plain (ungated) LoRA adapters; `{first}` is not one"
                )));
            }
        }
    }
    let mut config = config;
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
    let modules = build_modules(model, &config, Some(0))?;
    // The SVD runs on the model's backend without gradient tracking.
    let host = model.device()?.without_autodiff();
    let weights: Vec<f64> = sources.iter().map(|(_, w)| *w).collect();
    let mut residual_sources: Vec<Vec<ParamValues>> = Vec::new();
    model.visit_sites(&mut |site| {
        residual_sources.push(
            sources
                .iter()
                .filter_map(|(n, _)| site.adapters().get(n).map(values_of))
                .collect(),
        );
    });
    let mut linear_sources = Vec::new();
    model.visit_linear_sites(&mut |site| {
        linear_sources.push(
            sources
                .iter()
                .filter_map(|(n, _)| site.loras().get(n))
                .map(|l| (values_of(l), l.scaling))
                .collect::<Vec<_>>(),
        );
    });
    let residual = modules
        .residual
        .into_iter()
        .zip(residual_sources)
        .map(|(module, found)| {
            module.map(|module| {
                let averaged = weighted_sum(&found, &weights, |_| 1.0);
                module.map(&mut Replace(averaged.into_iter()))
            })
        })
        .collect();
    let linear = modules
        .linear
        .into_iter()
        .zip(linear_sources)
        .map(|(module, found)| match module {
            None => Ok(None),
            Some(module) => {
                let values: Vec<_> = found.iter().map(|(v, _)| v.clone()).collect();
                let averaged = match strategy {
                    AverageStrategy::Linear => weighted_sum(&values, &weights, |_| 1.0),
                    // Parameters in visiting order: lora_a (index 0), lora_b (index 1).
                    AverageStrategy::LoraLinearOnlyNegateB => weighted_sum(
                        &values,
                        &weights,
                        |index| if index == 0 { -1.0 } else { 1.0 },
                    ),
                    AverageStrategy::LoraDeltaWSvd { rank } => {
                        svd_average(&values, &weights, rank, &host)?
                    }
                };
                Ok(Some(module.map(&mut Replace(averaged.into_iter()))))
            }
        })
        .collect::<Result<_>>()?;
    install(
        model,
        name,
        config,
        AdapterModules { residual, linear },
        None,
    );
    Ok(())
}

/// `Σ wᵢ·pᵢ` per parameter; `sign(index)` < 0 makes that parameter use `|wᵢ|`.
fn weighted_sum(
    sources: &[ParamValues],
    weights: &[f64],
    sign: impl Fn(usize) -> f64,
) -> Vec<Vec<f32>> {
    let Some(first) = sources.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|index| {
            let mut sum = vec![0.0f64; first[index].1.len()];
            for (source, weight) in sources.iter().zip(weights) {
                let w = if sign(index) < 0.0 {
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
    device: &burn::tensor::Device,
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
    // torch's ΔW is our transpose: [out, in] = U S Vt.
    let torch_delta: Vec<f32> = (0..d_out)
        .flat_map(|j| (0..d_in).map(move |i| (i, j)))
        .map(|(i, j)| delta[i * d_out + j] as f32)
        .collect();
    let matrix = Tensor::<2>::from_data(TensorData::new(torch_delta, [d_out, d_in]), device);
    let (u, s, vt) = burn::linalg::svd::<2, 1>(matrix, 200);
    let u: Vec<f32> = u.into_data().try_to_vec().unwrap_or_default(); // [out, k]
    let s: Vec<f32> = s.into_data().try_to_vec().unwrap_or_default(); // [k]
    let vt: Vec<f32> = vt.into_data().try_to_vec().unwrap_or_default(); // [k, in]
    let k = s.len();
    // Ours: A = V[:, :rank] as [in, rank]; B = (U[:, :rank] S)ᵀ as [rank, out].
    let a: Vec<f32> = (0..d_in)
        .flat_map(|i| (0..rank).map(move |c| (i, c)))
        .map(|(i, c)| vt[c * d_in + i])
        .collect();
    let b: Vec<f32> = (0..rank)
        .flat_map(|c| (0..d_out).map(move |j| (c, j)))
        .map(|(c, j)| u[j * k + c] * s[c])
        .collect();
    Ok(vec![a, b])
}
