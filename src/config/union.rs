//! Unions: AdapterHub's `mam` and `unipelt` presets and the pairwise check of a union's parts.

use super::{AdapterConfig, Architecture, BnConfig, LoRAConfig, PrefixTuningConfig};
use crate::error::{Error, Result};

impl AdapterConfig {
    /// The `mam` preset, Mix-and-Match adapters (He et al., 2021; AdapterHub's `MAMConfig`):
    /// prefix tuning with an MLP of width 800 and a parallel bottleneck adapter ([`BnConfig::par_bn`]).
    pub fn mam() -> Self {
        AdapterConfig::Union(vec![
            PrefixTuningConfig {
                bottleneck_size: 800,
                ..PrefixTuningConfig::prefix_tuning()
            }
            .into(),
            BnConfig::par_bn().into(),
        ])
    }

    /// The `unipelt` preset (Mao et al., 2022; AdapterHub's `UniPELTConfig`): prefix tuning with
    /// 10 positions, a sequential bottleneck adapter (reduction factor 16) and LoRA (`r = 8`,
    /// `alpha = 2`), each with a learned gate.
    pub fn unipelt() -> Self {
        AdapterConfig::Union(vec![
            PrefixTuningConfig {
                prefix_length: 10,
                use_gating: true,
                ..PrefixTuningConfig::prefix_tuning()
            }
            .into(),
            BnConfig {
                use_gating: true,
                ..BnConfig::seq_bn()
            }
            .into(),
            LoRAConfig {
                r: 8,
                alpha: 2.0,
                use_gating: true,
                ..LoRAConfig::lora()
            }
            .into(),
        ])
    }

    /// The union preset of that name, if it is one.
    pub(super) fn union_preset(name: &str) -> Option<Self> {
        match name {
            "mam" => Some(Self::mam()),
            "unipelt" => Some(Self::unipelt()),
            _ => None,
        }
    }
}

/// AdapterHub's pairwise check of a union: two parts of one architecture conflict, except two
/// bottlenecks at different sites (mh_adapter / output_adapter); undecidable, so allowed, when
/// either leaves layers out.
pub(super) fn check_union_pairs(configs: &[AdapterConfig]) -> Result<()> {
    let loras = configs.iter().filter(|c| c.lora().is_some()).count();
    if loras > 1
        && configs
            .iter()
            .any(|c| c.architecture() == Architecture::MtlLora)
    {
        return Err(Error::invalid(
            "configs",
            "lora and mtl_lora",
            "a union holds one LoRA-family config: both would wrap the same projections",
        ));
    }
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[i + 1..] {
            if a.architecture() != b.architecture()
                || !a.leave_out().is_empty()
                || !b.leave_out().is_empty()
            {
                continue;
            }
            let reason = match (a, b) {
                (AdapterConfig::Bottleneck(a), AdapterConfig::Bottleneck(b)) => {
                    if a.mh_adapter != b.mh_adapter && a.output_adapter != b.output_adapter {
                        continue;
                    }
                    "bottlenecks in one union must sit at different sites (mh_adapter / output_adapter)"
                }
                _ => "a union holds at most one config of each architecture",
            };
            let value = format!("two {} configs", a.architecture());
            return Err(Error::invalid("configs", value, reason));
        }
    }
    Ok(())
}
