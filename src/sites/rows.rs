//! Running the row groups of a routing (from `Parallel`, `BatchSplit`, `PerRow`) on their rows
//! of a batch.

use burn::tensor::{Int, Tensor, TensorData};

use crate::composition::{Routing, Rows};

/// Runs `run(variant, inputs)` on each group's rows of `inputs` (all `[batch, ...]`) and
/// reassembles the outputs in the batch's row order.
pub(crate) fn run_row_groups<const N: usize>(
    routing: &Routing,
    inputs: [Tensor<3>; N],
    run: impl Fn(usize, [Tensor<3>; N]) -> Tensor<3>,
) -> Tensor<3> {
    let device = inputs[0].device();
    let indices = |rows: &[i64]| {
        Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [rows.len()]), &device)
    };
    if let [group] = routing.groups.as_slice()
        && routing.restore.is_none()
    {
        return run(group.variant, inputs);
    }
    let outputs = routing
        .groups
        .iter()
        .map(|group| {
            let take = |t: &Tensor<3>| match &group.rows {
                Rows::Range { start, len } => t.clone().narrow(0, *start, *len),
                Rows::Gather(rows) => t.clone().select(0, indices(rows)),
            };
            run(group.variant, inputs.each_ref().map(take))
        })
        .collect();
    let output = Tensor::cat(outputs, 0);
    match &routing.restore {
        Some(restore) => output.select(0, indices(restore)),
        None => output,
    }
}
