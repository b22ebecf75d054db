//! `Activation`: the non-linearities configs name (`non_linearity`, `hidden_act`,
//! `activation_function`), read and written as AdapterHub's and transformers' strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// An element-wise non-linearity.
///
/// In JSON it is a string, looked up case-insensitively as AdapterHub does: `relu`, `gelu`
/// (exact, erf-based), `gelu_new` (also `gelu_pytorch_tanh`, `gelu_fast`: the tanh
/// approximation), `swish`/`silu`, `tanh`, `sigmoid`, `leakyrelu`, `identity`/`linear`. Any other
/// string is an error naming the field. It is written back under its first name in that list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `relu`
    Relu,
    /// `gelu`: exact, erf-based.
    Gelu,
    /// `gelu_new`: the tanh approximation.
    GeluNew,
    /// `swish` / `silu`: `x·sigmoid(x)`.
    Silu,
    /// `tanh`
    Tanh,
    /// `sigmoid`
    Sigmoid,
    /// `leakyrelu` (slope 0.01)
    LeakyRelu,
    /// `identity` / `linear`: no non-linearity.
    Identity,
}

/// The accepted names, for messages.
const NAMES: &str = "relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, swish, silu, tanh, sigmoid, \
                     leakyrelu, identity, linear";

impl Activation {
    /// The activation called `name` (case-insensitive; see the type's docs), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluNew,
            "swish" | "silu" => Activation::Silu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "leakyrelu" => Activation::LeakyRelu,
            "identity" | "linear" => Activation::Identity,
            _ => return None,
        })
    }

    /// The name written to files (AdapterHub's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
            Activation::Silu => "swish",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::LeakyRelu => "leakyrelu",
            Activation::Identity => "identity",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = Error;

    /// Parses a name; the error names the field `activation`.
    fn from_str(name: &str) -> Result<Self> {
        Self::from_name(name).ok_or_else(|| {
            Error::invalid(
                "activation",
                format!("{name:?}"),
                format!("expected one of {NAMES}"),
            )
        })
    }
}

impl Serialize for Activation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown activation {:?}, expected one of {NAMES}",
                crate::error::shorten(&name, 0)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_case_insensitively_and_write_adapterhub_spelling() {
        let read = |s: &str| serde_json::from_value::<Activation>(serde_json::json!(s));
        assert_eq!(read("ReLU").unwrap(), Activation::Relu);
        assert_eq!(read("silu").unwrap(), Activation::Silu);
        assert_eq!(read("gelu_pytorch_tanh").unwrap(), Activation::GeluNew);
        assert!(read("wiggle").unwrap_err().to_string().contains("wiggle"));
        assert_eq!(serde_json::to_value(Activation::Silu).unwrap(), "swish");
        assert!(matches!(
            "wiggle".parse::<Activation>(),
            Err(Error::InvalidConfig { field, .. }) if field == "activation"
        ));
    }
}
