//! Running row groups (from `Parallel`, `BatchSplit`, `PerRow`) on their rows of a batch.

use burn::tensor::{Int, Tensor, TensorData};

use crate::composition::{AdapterSetup, RowGroup, row_groups};

/// Runs `f` on each row group's rows of `inputs` (all `[batch, ...]`) and reassembles the
/// outputs in the original row order.
pub(crate) fn run_row_groups(
    setup: &AdapterSetup,
    inputs: Vec<Tensor<3>>,
    f: impl Fn(&AdapterSetup, Vec<Tensor<3>>) -> Tensor<3>,
) -> Tensor<3> {
    let [batch, _, _] = inputs[0].dims();
    let groups = row_groups(setup, batch);
    if let [only] = groups.as_slice()
        && only.rows.len() == batch
    {
        return f(&only.setup, inputs);
    }
    let device = inputs[0].device();
    let rows_tensor = |rows: &[usize]| {
        let rows: Vec<i64> = rows.iter().map(|r| *r as i64).collect();
        let n = rows.len();
        Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device)
    };
    let mut outputs = Vec::with_capacity(groups.len());
    let mut order = Vec::with_capacity(batch);
    for RowGroup { rows, setup } in &groups {
        let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
        let take = |t: &Tensor<3>| {
            if contiguous {
                t.clone().narrow(0, rows[0], rows.len())
            } else {
                t.clone().select(0, rows_tensor(rows))
            }
        };
        outputs.push(f(setup, inputs.iter().map(take).collect()));
        order.extend_from_slice(rows);
    }
    let output = Tensor::cat(outputs, 0);
    if order.iter().enumerate().all(|(i, r)| i == *r) {
        return output;
    }
    // output row k holds batch row order[k]; invert the permutation.
    let mut inverse = vec![0; order.len()];
    for (k, row) in order.iter().enumerate() {
        inverse[*row] = k;
    }
    output.select(0, rows_tensor(&inverse))
}
