//! Checks of model inputs shared by the hosts.

use burn::tensor::{Int, Tensor};

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
