//! `LoRAInit`: how a LoRA module's matrices start (AdapterHub's `init_weights`, with PEFT's
//! `init_lora_weights` schemes beside them).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Initialisation of the LoRA matrices.
///
/// Written in JSON as AdapterHub and PEFT name them: `"lora"`, `"bert"`, `"ia3"`, `"vera"`,
/// `"gaussian"`, `"pissa"`, `"pissa_niter_4"`, `"olora"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LoRAInit {
    /// `A` kaiming-uniform, `B` zeros (the update starts at zero).
    Lora,
    /// `A` and `B` from N(0, 0.02).
    Bert,
    /// The IA3 vector starts at ones.
    Ia3,
    /// Kaiming-uniform `A` and `B` (gain √2: bound `√(6 / fan_in)`), the initialisation of VeRA's
    /// shared random matrices.
    Vera,
    /// PEFT's `"gaussian"`: `A` from N(0, 1/r), `B` zeros.
    Gaussian,
    /// PiSSA (Meng et al., 2024), PEFT's `"pissa"`: `A` and `B` start at the principal singular
    /// triplets of the wrapped weight, `W = U S Vᵀ`: `B A = U_r S_r V_rᵀ / scaling` with `√S_r`
    /// on each side, and the wrapped weight becomes the residual `W − scaling·B A`, so the
    /// layer's output is unchanged at the start.
    Pissa,
    /// PiSSA from a randomized SVD with this many subspace iterations (PEFT's
    /// `"pissa_niter_N"`, Halko et al.'s algorithm as `torch.svd_lowrank`): faster on large
    /// weights, and random.
    PissaNiter(u32),
    /// OLoRA (Büyükakyüz, 2024), PEFT's `"olora"`: from the QR decomposition `W = Q R`, `B` starts
    /// at `Q`'s first `r` columns and `A` at `R`'s first `r` rows; the wrapped weight becomes
    /// `W − scaling·B A`.
    Olora,
}

impl LoRAInit {
    /// Whether the initialisation changes the wrapped weights (PiSSA and OLoRA move part of the
    /// weight into the adapter).
    pub fn changes_base(self) -> bool {
        matches!(self, Self::Pissa | Self::PissaNiter(_) | Self::Olora)
    }
}

const PISSA_NITER: &str = "pissa_niter_";

impl fmt::Display for LoRAInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lora => f.write_str("lora"),
            Self::Bert => f.write_str("bert"),
            Self::Ia3 => f.write_str("ia3"),
            Self::Vera => f.write_str("vera"),
            Self::Gaussian => f.write_str("gaussian"),
            Self::Pissa => f.write_str("pissa"),
            Self::PissaNiter(n) => write!(f, "{PISSA_NITER}{n}"),
            Self::Olora => f.write_str("olora"),
        }
    }
}

impl From<LoRAInit> for String {
    fn from(init: LoRAInit) -> Self {
        init.to_string()
    }
}

impl TryFrom<String> for LoRAInit {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Ok(match name.as_str() {
            "lora" => Self::Lora,
            "bert" => Self::Bert,
            "ia3" => Self::Ia3,
            "vera" => Self::Vera,
            "gaussian" => Self::Gaussian,
            "pissa" => Self::Pissa,
            "olora" => Self::Olora,
            other => {
                let iterations = other
                    .strip_prefix(PISSA_NITER)
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| n.to_string() == other[PISSA_NITER.len()..]);
                match iterations {
                    Some(n) => Self::PissaNiter(n),
                    None => {
                        return Err(format!(
                            "unknown initialisation `{other}`: expected lora, bert, ia3, vera, \
                             gaussian, pissa, pissa_niter_<iterations> or olora"
                        ));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_odd_ones_are_refused() {
        for init in [
            LoRAInit::Lora,
            LoRAInit::Bert,
            LoRAInit::Ia3,
            LoRAInit::Vera,
            LoRAInit::Gaussian,
            LoRAInit::Pissa,
            LoRAInit::PissaNiter(0),
            LoRAInit::PissaNiter(16),
            LoRAInit::Olora,
        ] {
            assert_eq!(LoRAInit::try_from(init.to_string()), Ok(init));
        }
        for odd in [
            "pissa_niter_",
            "pissa_niter_+4",
            "pissa_niter_04",
            "PiSSA",
            "loftq",
        ] {
            assert!(LoRAInit::try_from(odd.to_string()).is_err(), "{odd}");
        }
    }
}
