//! Small value types shared by the method configs, each serialised exactly as AdapterHub writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Writes a float the way Python's `json` writes the number it came from: integral values that
/// AdapterHub keeps as `int` (such as `reduction_factor: 16`) stay integers.
pub(crate) fn serialize_python_number<S: Serializer>(
    value: f64,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serializer.serialize_i64(value as i64)
    } else {
        serializer.serialize_f64(value)
    }
}

/// Checks that `p` is a dropout-style probability in `[0, 1)`; the error names `field`.
pub(crate) fn check_probability(field: &str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid(field, p, "must be a probability in [0, 1)"))
    }
}

/// Checks that `value` is positive and finite (an epsilon, a scale); the error names `field`.
pub(crate) fn check_positive(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(field, value, "must be positive and finite"))
    }
}

/// Checks that every `(field, size)` is at least 1; the error names the first that is not.
pub(crate) fn check_sizes(sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, size)| *size == 0) {
        Some((field, _)) => Err(Error::invalid(*field, 0, "must be at least 1")),
        None => Ok(()),
    }
}

/// Hidden size divided by this gives the bottleneck size: a single number, or one per layer.
///
/// The per-layer form is keyed by the layer index as a string, with an optional `"default"`
/// entry for layers not listed (AdapterHub's `{"0": 8, "default": 16}`).
#[derive(Debug, Clone, PartialEq)]
pub enum ReductionFactor {
    /// The same factor for every layer.
    Uniform(f64),
    /// A factor per layer index (as a string key) and/or a `"default"`.
    PerLayer(BTreeMap<String, f64>),
}

impl ReductionFactor {
    /// The factor used at `layer`, or an error naming the missing key.
    pub fn for_layer(&self, layer: usize) -> Result<f64> {
        match self {
            ReductionFactor::Uniform(rf) => Ok(*rf),
            ReductionFactor::PerLayer(map) => map
                .get(&layer.to_string())
                .or_else(|| map.get("default"))
                .copied()
                .ok_or_else(|| {
                    Error::invalid(
                        "reduction_factor",
                        format!("{map:?}"),
                        format!("no entry for layer {layer} and no \"default\""),
                    )
                }),
        }
    }

    /// Bottleneck width at a layer of a model with `hidden_size`, as the reference computes it:
    /// `max(1, floor(hidden_size / rf))`.
    /// Factors that would make the bottleneck more than 64 times wider than the model are
    /// rejected rather than allocated.
    pub fn bottleneck_size(&self, hidden_size: usize, layer: usize) -> Result<usize> {
        let rf = self.for_layer(layer)?;
        let size = (hidden_size as f64 / rf).floor();
        if !size.is_finite() || size > 64.0 * hidden_size as f64 {
            return Err(Error::invalid(
                "reduction_factor",
                rf,
                format!("gives a bottleneck of {size} units for hidden size {hidden_size}"),
            ));
        }
        Ok((size as usize).max(1))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let check = |field: String, rf: f64| {
            if rf.is_finite() && rf > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(field, rf, "must be a finite number > 0"))
            }
        };
        match self {
            ReductionFactor::Uniform(rf) => check("reduction_factor".into(), *rf),
            ReductionFactor::PerLayer(map) => {
                for (key, rf) in map {
                    if key != "default" && key.parse::<usize>().is_err() {
                        return Err(Error::invalid(
                            format!("reduction_factor.{key}"),
                            key,
                            "keys must be layer indices or \"default\"",
                        ));
                    }
                    check(format!("reduction_factor.{key}"), *rf)?;
                }
                Ok(())
            }
        }
    }
}

impl From<f64> for ReductionFactor {
    fn from(rf: f64) -> Self {
        ReductionFactor::Uniform(rf)
    }
}

impl From<u32> for ReductionFactor {
    fn from(rf: u32) -> Self {
        ReductionFactor::Uniform(rf as f64)
    }
}

impl Serialize for ReductionFactor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            ReductionFactor::Uniform(rf) => serialize_python_number(*rf, serializer),
            ReductionFactor::PerLayer(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, rf) in map {
                    out.serialize_key(key)?;
                    out.serialize_value(&PythonNumber(*rf))?;
                }
                out.end()
            }
        }
    }
}

struct PythonNumber(f64);

impl Serialize for PythonNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_python_number(self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for ReductionFactor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Uniform(f64),
            PerLayer(BTreeMap<String, f64>),
        }
        match Repr::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a number or a map of layer index/\"default\" to numbers",
            )
        })? {
            Repr::Uniform(rf) => Ok(ReductionFactor::Uniform(rf)),
            Repr::PerLayer(map) => Ok(ReductionFactor::PerLayer(map)),
        }
    }
}

/// Where the adapter's residual connection is taken from (`residual_before_ln`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualBeforeLn {
    /// `true`: the sublayer output before the original LayerNorm.
    Before,
    /// `false`: the adapter input, i.e. after the original LayerNorm if it is applied first.
    After,
    /// `"post_add"`: the sum of sublayer output and residual, before the LayerNorm.
    PostAdd,
}

impl Serialize for ResidualBeforeLn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ResidualBeforeLn::Before => serializer.serialize_bool(true),
            ResidualBeforeLn::After => serializer.serialize_bool(false),
            ResidualBeforeLn::PostAdd => serializer.serialize_str("post_add"),
        }
    }
}

impl<'de> Deserialize<'de> for ResidualBeforeLn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(ResidualBeforeLn::Before),
            serde_json::Value::Bool(false) => Ok(ResidualBeforeLn::After),
            serde_json::Value::String(s) if s == "post_add" => Ok(ResidualBeforeLn::PostAdd),
            other => Err(serde::de::Error::custom(format!(
                "expected true, false or \"post_add\", found {other}"
            ))),
        }
    }
}

/// Scaling of the adapter output (`scaling`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scaling {
    /// A constant factor.
    Fixed(f64),
    /// `"learned"`: one trainable scalar, initialised to 1.
    Learned,
    /// `"channel"`: one trainable factor per hidden unit, initialised to 1.
    Channel,
}

impl Serialize for Scaling {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Scaling::Fixed(value) => serializer.serialize_f64(*value),
            Scaling::Learned => serializer.serialize_str("learned"),
            Scaling::Channel => serializer.serialize_str("channel"),
        }
    }
}

impl<'de> Deserialize<'de> for Scaling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(Scaling::Fixed)
                .ok_or_else(|| serde::de::Error::custom("scaling is not a finite number")),
            serde_json::Value::String(s) if s == "learned" => Ok(Scaling::Learned),
            serde_json::Value::String(s) if s == "channel" => Ok(Scaling::Channel),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, \"learned\" or \"channel\", found {other}"
            ))),
        }
    }
}

/// Weight initialisation scheme of a bottleneck (`init_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitWeights {
    /// N(0, 0.02) weights, zero biases (not an identity at start).
    Bert,
    /// Kaiming-uniform down projection, zero up projection: the adapter starts as an identity.
    MamAdapter,
    /// Truncated normal (std 0.01, ±0.02) weights, zero biases.
    Houlsby,
}
