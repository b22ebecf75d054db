//! Parameter names: our module paths ↔ AdapterHub tensor names and layouts.

/// How one of our parameters is stored in an AdapterHub file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReferenceName {
    /// Tensor names relative to the module's prefix; the first is canonical, the others are
    /// aliases AdapterHub also writes for the same tensor.
    pub names: Vec<String>,
    /// The tensor is a `Linear` weight: burn `[in, out]`, torch `[out, in]`.
    pub transpose: bool,
}

impl ReferenceName {
    /// A parameter written elsewhere than under its module (collecting skips it).
    pub(crate) fn nowhere() -> Self {
        Self {
            names: Vec::new(),
            transpose: false,
        }
    }
}

/// The AdapterHub name of a bottleneck parameter given its path inside [`Bottleneck`]
/// (`down.Dense.weight`, `norm_before.gamma`, ...). `ln_before` shifts the down projection to
/// index 1 of `adapter_down`, whose index 0 is then the LayerNorm (also registered as
/// `adapter_norm_before`). A PHM projection's tensors keep their layouts (`W` is already
/// `[n, d_in / n, d_out / n]`).
///
/// [`Bottleneck`]: crate::methods::Bottleneck
pub(crate) fn bottleneck_name(path: &str, ln_before: bool) -> Option<ReferenceName> {
    let (names, transpose): (Vec<&'static str>, bool) = match path {
        "norm_before.gamma" => (
            vec!["adapter_down.0.weight", "adapter_norm_before.weight"],
            false,
        ),
        "norm_before.beta" => (
            vec!["adapter_down.0.bias", "adapter_norm_before.bias"],
            false,
        ),
        "scaling" => (vec!["scaling"], false),
        "gate.weight" => (vec!["gate.weight"], true),
        "gate.bias" => (vec!["gate.bias"], false),
        "norm_after.gamma" => (vec!["adapter_norm_after.weight"], false),
        "norm_after.beta" => (vec!["adapter_norm_after.bias"], false),
        _ => {
            let (projection, rest) = path.split_once('.')?;
            let module = match (projection, ln_before) {
                ("down", false) => "adapter_down.0",
                ("down", true) => "adapter_down.1",
                ("up", _) => "adapter_up",
                _ => return None,
            };
            let (name, transpose) = projection_name(rest)?;
            return Some(ReferenceName {
                names: vec![format!("{module}.{name}")],
                transpose,
            });
        }
    };
    Some(ReferenceName {
        names: names.into_iter().map(str::to_string).collect(),
        transpose,
    })
}

/// The name of a projection's parameter under its module (`Dense.weight` → `weight`, transposed;
/// `Phm.weight.Factorized.left` → `W_left`, ...).
fn projection_name(path: &str) -> Option<(&'static str, bool)> {
    Some(match path {
        "Dense.weight" => ("weight", true),
        "Dense.bias" => ("bias", false),
        "Phm.rule.Full" => ("phm_rule", false),
        "Phm.rule.Factorized.left" => ("phm_rule_left", false),
        "Phm.rule.Factorized.right" => ("phm_rule_right", false),
        "Phm.weight.Full" => ("W", false),
        "Phm.weight.Factorized.left" => ("W_left", false),
        "Phm.weight.Factorized.right" => ("W_right", false),
        "Phm.bias" => ("b", false),
        _ => return None,
    })
}

/// The AdapterHub name of a LoRA/IA3/MTL-LoRA parameter given its path inside [`LoRA`].
/// AdapterHub's `lora_A` is `[r, d_input]` and `lora_B` `[d_output, r]` (`[d_output, 1]` for IA3,
/// `[n, d_output, r]` for MTL-LoRA): ours are their transposes (of the last two dimensions).
///
/// [`LoRA`]: crate::methods::LoRA
pub(crate) fn lora_name(path: &str) -> Option<ReferenceName> {
    let (name, transpose) = match path {
        "lora_a" => ("lora_A", true),
        "lora_b" => ("lora_B", true),
        // MTL-LoRA's up projections, AdapterHub's `[n, d_output, r]`.
        "multi_task.lora_b" => ("lora_B", true),
        "multi_task.task_specific.SingularValues" | "multi_task.task_specific.Linear" => {
            ("task_specific.values", false)
        }
        "multi_task.weights" => ("weights", false),
        "gate.weight" => ("gate.weight", true),
        "gate.bias" => ("gate.bias", false),
        // DoRA's magnitude, AdapterHub's `m = nn.Linear(1, d_output)`: `[d_output, 1]`.
        "magnitude" => ("m.weight", true),
        // VeRA's vectors, the diagonals of AdapterHub's matrices (`model::vera` converts).
        "vera.d" => ("vera_D", false),
        "vera.b" => ("vera_B", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.to_string()],
        transpose,
    })
}

/// The AdapterHub name, in a sharing adapter's file, of a shared MTL-LoRA factor given its
/// path inside [`SharedFactors`](crate::methods::SharedFactors).
pub(crate) fn shared_factor_name(path: &str) -> Option<ReferenceName> {
    let name = match path {
        "lora_a" => "lora_A",
        "lora_b" => "lora_B",
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.to_string()],
        transpose: true,
    })
}

/// The AdapterHub name, under `shared_parameters.<name>`, of a shared PHM parameter given its
/// path inside [`SharedPhm`](crate::methods::SharedPhm).
pub(crate) fn shared_phm_name(path: &str) -> Option<ReferenceName> {
    let name = match path {
        "rule.Full" => "phm_rule",
        "rule.Factorized.left" => "phm_rule_left",
        "rule.Factorized.right" => "phm_rule_right",
        "weights.down.Full" => "W_down",
        "weights.down.Factorized.left" => "W_down_left",
        "weights.down.Factorized.right" => "W_down_right",
        "weights.up.Full" => "W_up",
        "weights.up.Factorized.left" => "W_up_left",
        "weights.up.Factorized.right" => "W_up_right",
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.to_string()],
        transpose: false,
    })
}

/// AdapterHub's location key of a self-attention prefix (`PrefixTuningLayer("self_prefix")`):
/// the level under the adapter name in the prefix pool's tensor names.
pub(crate) const SELF_PREFIX: &str = "self_prefix";

/// The AdapterHub name of a prefix-tuning parameter given its path inside
/// [`PrefixTuning`](crate::methods::PrefixTuning): `wte` and `control_trans.{0,2}` of the MLP
/// form, `control_trans` of the flat one.
pub(crate) fn prefix_name(path: &str) -> Option<ReferenceName> {
    let (name, transpose) = match path {
        "params.Mlp.embeddings" => ("wte.weight", false),
        "params.Mlp.mlp_in.weight" => ("control_trans.0.weight", true),
        "params.Mlp.mlp_in.bias" => ("control_trans.0.bias", false),
        "params.Mlp.mlp_out.weight" => ("control_trans.2.weight", true),
        "params.Mlp.mlp_out.bias" => ("control_trans.2.bias", false),
        "params.Flat" => ("control_trans", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.to_string()],
        transpose,
    })
}

/// The AdapterHub name of a prefix gate's parameter (`prefix_gates.<name>.weight`).
pub(crate) fn prefix_gate_name(path: &str) -> Option<ReferenceName> {
    let (name, transpose) = match path {
        "linear.weight" => ("weight", true),
        "linear.bias" => ("bias", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.to_string()],
        transpose,
    })
}

/// The AdapterHub name of a prompt's parameter (`prompt_embedding.weight`).
pub(crate) fn prompt_name(path: &str) -> Option<ReferenceName> {
    (path == "embedding").then(|| ReferenceName {
        names: vec!["prompt_embedding.weight".to_string()],
        transpose: false,
    })
}

/// The AdapterHub name of an invertible adapter's parameter given its path inside
/// [`InvertibleAdapter`](crate::methods::InvertibleAdapter) (`Nice.f.down.weight` ↔
/// `F.0.weight`, `Glow.s1.up.bias` ↔ `s1.2.bias`).
pub(crate) fn invertible_name(path: &str) -> Option<ReferenceName> {
    let (_, path) = path.split_once('.')?;
    let (net, rest) = path.split_once('.')?;
    let net = match net {
        "f" => "F",
        "g" => "G",
        "s1" | "s2" => net,
        _ => return None,
    };
    let (index, transpose) = match rest {
        "down.weight" => ("0.weight", true),
        "down.bias" => ("0.bias", false),
        "up.weight" => ("2.weight", true),
        "up.bias" => ("2.bias", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![format!("{net}.{index}")],
        transpose,
    })
}

/// The AdapterHub name of a ReFT parameter given its path inside
/// [`ReftModule`](crate::methods::ReftModule) (`units.{k}.learned_source.weight`,
/// `units.{k}.projection.Orthogonal.original`, ...): torch's parametrization names for an
/// orthogonal projection.
pub(crate) fn reft_name(path: &str) -> Option<ReferenceName> {
    let (unit, field) = path.strip_prefix("units.")?.split_once('.')?;
    let unit: usize = unit.parse().ok()?;
    let (name, transpose) = match field {
        "learned_source.weight" => ("learned_source.weight", true),
        "learned_source.bias" => ("learned_source.bias", false),
        "projection.Plain" => ("projection.weight", false),
        "projection.Orthogonal.original" => ("projection.parametrizations.weight.original", false),
        "projection.Orthogonal.base" => ("projection.parametrizations.weight.0.base", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![format!("units.{unit}.{name}")],
        transpose,
    })
}

/// The AdapterHub name of a prediction-head parameter (`layers.{i}.weight`): the index of the
/// layer in AdapterHub's `nn.Sequential` of dropout, linear and activation modules.
pub(crate) fn head_name(
    path: &str,
    reference_index: impl Fn(usize) -> usize,
    norm_index: impl Fn(usize) -> usize,
) -> Option<ReferenceName> {
    let (kind, rest) = path.split_once('.')?;
    let (index, field) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (index, field, transpose) = match (kind, field) {
        ("layers", "weight") => (reference_index(index), "weight", true),
        ("layers", "bias") => (reference_index(index), "bias", false),
        ("norms", "gamma") => (norm_index(index), "weight", false),
        ("norms", "beta") => (norm_index(index), "bias", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![format!("{index}.{field}")],
        transpose,
    })
}

/// AdapterHub's name of a fusion parameter (`query.weight`, ...): the same path, torch layout.
pub(crate) fn fusion_name(path: &str) -> Option<ReferenceName> {
    let (module, field) = path.split_once('.')?;
    if !matches!(module, "query" | "key" | "value") {
        return None;
    }
    let transpose = match field {
        "weight" => true,
        "bias" => false,
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![path.to_string()],
        transpose,
    })
}

/// Where a site's fusion layers sit in AdapterHub's naming: beside its `adapters`
/// (`encoder.layer.0.output.adapter_fusion_layer`).
pub(crate) fn fusion_prefix(site_path: &str) -> String {
    let parent = site_path.strip_suffix(".adapters").unwrap_or(site_path);
    format!("{parent}.adapter_fusion_layer")
}

/// PEFT's name of one of our LoRA parameters (PEFT's `lora_A` is `[r, d_input]`, as
/// AdapterHub's). DoRA's magnitude is `[d_output]` in PEFT's files and `[1, d_output]` here:
/// the PEFT reader and writer reshape it ([`PEFT_MAGNITUDE`]).
pub(crate) fn peft_name(path: &str) -> Option<ReferenceName> {
    let (name, transpose) = match path {
        "lora_a" => ("lora_A.weight", true),
        "lora_b" => ("lora_B.weight", true),
        "magnitude" => (PEFT_MAGNITUDE, false),
        "vera.d" => ("vera_lambda_d", false),
        "vera.b" => ("vera_lambda_b", false),
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![name.into()],
        transpose,
    })
}

/// PEFT's name of an IA3 vector (ours `lora_b`, `[1, d]`): `ia3_l`, `[d_output, 1]` when it
/// scales the output and `[1, d_input]` when it scales the input (PEFT's `feedforward_modules`).
pub(crate) fn peft_ia3_name(path: &str, scales_input: bool) -> Option<ReferenceName> {
    (path == "lora_b").then(|| ReferenceName {
        names: vec![PEFT_IA3.into()],
        transpose: !scales_input,
    })
}

/// PEFT's name of an IA3 vector.
pub(crate) const PEFT_IA3: &str = "ia3_l";

/// PEFT's name of DoRA's magnitude vector (its files keep the name it had before PEFT made the
/// vector a module, without `.weight`).
pub(crate) const PEFT_MAGNITUDE: &str = "lora_magnitude_vector";

/// The module a linear site wraps, in transformers' naming, from the path of its LoRA modules
/// (`encoder.layer.0.attention.self.query.loras` → `encoder.layer.0.attention.self.query`).
pub(crate) fn wrapped_module(lora_path: &str) -> &str {
    lora_path.strip_suffix(".loras").unwrap_or(lora_path)
}

/// Strips the prefix a model with heads puts before the base model's keys.
pub(crate) fn strip_model_prefix(key: &str) -> &str {
    key.strip_prefix("bert.").unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bottleneck_parameter_has_one_name_and_names_are_unique() {
        let paths = [
            "norm_before.gamma",
            "norm_before.beta",
            "down.Dense.weight",
            "down.Dense.bias",
            "up.Dense.weight",
            "up.Dense.bias",
            "down.Phm.rule.Full",
            "down.Phm.weight.Factorized.left",
            "up.Phm.rule.Factorized.right",
            "up.Phm.bias",
            "scaling",
            "gate.weight",
            "gate.bias",
            "norm_after.gamma",
            "norm_after.beta",
        ];
        for ln_before in [false, true] {
            let mut seen = std::collections::HashSet::new();
            for path in paths {
                if path.starts_with("norm_before") && !ln_before {
                    continue;
                }
                let name = bottleneck_name(path, ln_before).unwrap();
                for n in name.names {
                    assert!(seen.insert(n.clone()), "{n} used twice");
                }
            }
        }
        assert_eq!(bottleneck_name("dropout.prob", false), None);
        assert_eq!(lora_name("lora_b").unwrap().names, ["lora_B"]);
        assert_eq!(lora_name("scaling"), None);
        assert_eq!(strip_model_prefix("bert.encoder.x"), "encoder.x");
        let head = head_name("layers.1.weight", |i| 3 * i + 1, |i| 3 * i + 3).unwrap();
        assert_eq!(
            (head.names, head.transpose),
            (vec!["4.weight".to_string()], true)
        );
        let norm = head_name("norms.0.beta", |i| 3 * i, |i| 3 * i + 2).unwrap();
        assert_eq!(
            (norm.names, norm.transpose),
            (vec!["2.bias".to_string()], false)
        );
    }
}
