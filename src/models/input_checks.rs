//! Checks of model inputs, and the attention mask value, shared by the hosts.

use burn::tensor::{DType, Int, Tensor};

use crate::error::{Error, Result};

/// Checks that every value of `ids` lies in `0..bound`.
pub(crate) fn check_range(name: &str, ids: &Tensor<2, Int>, bound: usize) -> Result<()> {
    let extremes = Tensor::cat(vec![ids.clone().min(), ids.clone().max()], 0)
        .into_data()
        .convert::<i64>();
    let extremes = extremes.as_slice::<i64>().unwrap_or_default();
    match extremes {
        [min, max] if *min >= 0 && (*max as u64) < bound as u64 => Ok(()),
        [min, max] => Err(Error::input(
            name,
            format!("values from {min} to {max}, outside 0..{bound}"),
        )),
        _ => Err(Error::input(name, "its values could not be read")),
    }
}

/// Fails on an empty batch (`[batch, seq]` with a zero).
pub(crate) fn check_not_empty(name: &str, [batch, seq]: [usize; 2]) -> Result<()> {
    if batch == 0 || seq == 0 {
        return Err(Error::input(
            name,
            format!("shape [{batch}, {seq}] is empty"),
        ));
    }
    Ok(())
}

/// Fails unless `tensor`, when given, has the ids' shape `dims`.
pub(crate) fn check_same_shape(
    name: &str,
    tensor: Option<&Tensor<2, Int>>,
    [batch, seq]: [usize; 2],
) -> Result<()> {
    match tensor {
        Some(t) if t.dims() != [batch, seq] => Err(Error::input(
            name,
            format!("shape {:?}, but input_ids has [{batch}, {seq}]", t.dims()),
        )),
        _ => Ok(()),
    }
}

/// The score transformers gives masked keys: the dtype's lowest finite value (after the softmax
/// the same as -inf, except in a row with no key at all, which becomes a uniform average).
pub(crate) fn masked_score(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => half::f16::MIN.to_f64(),
        DType::BF16 => half::bf16::MIN.to_f64(),
        _ => f32::MIN as f64,
    }
}
