//! Combining one tensor per task into one (PEFT's `merge_utils`): task arithmetic, magnitude
//! pruning, TIES and DARE. Tensors are flat host values; every source has the same length.

use super::weighted::{MajoritySign, TaskMerge};
use crate::methods::init::InitRng;

/// `merge` of `tasks` weighted by `weights` (one per task).
pub(crate) fn merge_tasks(
    tasks: &[Vec<f32>],
    weights: &[f32],
    merge: TaskMerge,
    rng: &mut InitRng,
) -> Vec<f32> {
    match merge {
        TaskMerge::TaskArithmetic => weighted_sum(tasks, weights),
        TaskMerge::MagnitudePrune { density } => {
            let pruned: Vec<Vec<f32>> = tasks.iter().map(|t| keep_largest(t, density)).collect();
            weighted_sum(&pruned, weights)
        }
        TaskMerge::Ties {
            density,
            majority_sign,
        } => {
            let pruned: Vec<Vec<f32>> = tasks.iter().map(|t| keep_largest(t, density)).collect();
            disjoint_merge(&pruned, weights, majority_sign)
        }
        TaskMerge::DareLinear { density } => {
            let dropped: Vec<Vec<f32>> =
                tasks.iter().map(|t| drop_random(t, density, rng)).collect();
            weighted_sum(&dropped, weights)
        }
        TaskMerge::DareTies {
            density,
            majority_sign,
        } => {
            let dropped: Vec<Vec<f32>> =
                tasks.iter().map(|t| drop_random(t, density, rng)).collect();
            disjoint_merge(&dropped, weights, majority_sign)
        }
    }
}

/// `Σ wᵢ tᵢ`.
fn weighted_sum(tasks: &[Vec<f32>], weights: &[f32]) -> Vec<f32> {
    let mut sum = vec![0.0f32; tasks.first().map_or(0, Vec::len)];
    for (task, weight) in tasks.iter().zip(weights) {
        for (s, v) in sum.iter_mut().zip(task) {
            *s += v * weight;
        }
    }
    sum
}

/// `task` with all but its `⌊density·n⌋` largest magnitudes zeroed (PEFT's magnitude pruning;
/// a density of 1 or more keeps everything). Equal magnitudes keep the earlier entry.
fn keep_largest(task: &[f32], density: f64) -> Vec<f32> {
    if density >= 1.0 {
        return task.to_vec();
    }
    let keep = (density * task.len() as f64) as usize;
    let mut order: Vec<usize> = (0..task.len()).collect();
    order.sort_by(|&a, &b| task[b].abs().total_cmp(&task[a].abs()).then(a.cmp(&b)));
    let mut pruned = vec![0.0; task.len()];
    for &index in &order[..keep] {
        pruned[index] = task[index];
    }
    pruned
}

/// DARE's drop: each entry kept with probability `density` and rescaled by `1 / density` (a
/// density of 1 or more keeps everything unscaled, as PEFT does).
fn drop_random(task: &[f32], density: f64, rng: &mut InitRng) -> Vec<f32> {
    if density >= 1.0 {
        return task.to_vec();
    }
    let keep = rng.bernoulli(task.len(), density);
    task.iter()
        .zip(keep)
        .map(|(v, kept)| {
            if kept {
                (*v as f64 / density) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// TIES' sign election and disjoint mean: each entry's majority sign is that of the sum of the
/// (unweighted) tasks' entries, or of their signs; the weighted entries that agree with it are
/// averaged.
fn disjoint_merge(tasks: &[Vec<f32>], weights: &[f32], majority_sign: MajoritySign) -> Vec<f32> {
    let n = tasks.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let magnitude: f32 = match majority_sign {
                MajoritySign::Total => tasks.iter().map(|t| t[i]).sum(),
                MajoritySign::Frequency => tasks.iter().map(|t| sign(t[i])).sum(),
            };
            let majority = if magnitude >= 0.0 { 1.0 } else { -1.0 };
            let (mut sum, mut count) = (0.0f32, 0.0f32);
            for (task, weight) in tasks.iter().zip(weights) {
                if sign(task[i]) == majority {
                    sum += task[i] * weight;
                    count += 1.0;
                }
            }
            sum / count.max(1.0)
        })
        .collect()
}

/// torch's `sign`: −1, 0 or 1.
fn sign(value: f32) -> f32 {
    if value > 0.0 {
        1.0
    } else if value < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_keeps_the_largest_and_averages_the_agreeing_entries() {
        let tasks = vec![vec![3.0, -1.0, 0.5, 2.0], vec![-4.0, 2.0, 0.1, 1.0]];
        let mut rng = InitRng::seeded(0);
        let merge = TaskMerge::Ties {
            density: 0.5,
            majority_sign: MajoritySign::Total,
        };
        // pruned: [3, 0, 0, 2] and [-4, 2, 0, 0]; signs of the sums: -, +, +(0), +
        let merged = merge_tasks(&tasks, &[1.0, 0.5], merge, &mut rng);
        assert_eq!(merged, vec![-2.0, 1.0, 0.0, 2.0]);
    }
}
