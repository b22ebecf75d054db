//! Row blocks (`Parallel`, `BatchSplit`, `PerRow`, `MultiTask`) resolved into groups of rows, each with a
//! setup free of row blocks.
//!
//! A site runs every group on its own rows exactly as it would run that group's setup on the
//! whole batch, so each row (or branch) gets what running its adapters alone would give.
//! AdapterHub instead applies the first adapter's pre-forward and the last adapter's
//! post-forward to all rows of a `BatchSplit`/`Parallel`, which differs when the children's
//! adapters are configured differently.

use super::AdapterSetup;

/// Rows of the batch (ascending) and the setup they run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SetupRows {
    pub rows: Vec<usize>,
    pub setup: AdapterSetup,
}

impl AdapterSetup {
    /// Whether the setup routes rows (holds `Parallel`, `BatchSplit`, `PerRow` or `MultiTask`).
    pub(crate) fn has_row_blocks(&self) -> bool {
        matches!(
            self,
            AdapterSetup::Parallel(_)
                | AdapterSetup::BatchSplit { .. }
                | AdapterSetup::PerRow(_)
                | AdapterSetup::MultiTask { .. }
        ) || self.children().iter().any(AdapterSetup::has_row_blocks)
    }

    /// The same block with other children.
    fn with_children(&self, children: Vec<AdapterSetup>) -> AdapterSetup {
        match self {
            AdapterSetup::Stack(_) => AdapterSetup::Stack(children),
            AdapterSetup::Fuse(_) => AdapterSetup::Fuse(children),
            AdapterSetup::Split { splits, .. } => AdapterSetup::Split {
                children,
                splits: splits.clone(),
            },
            AdapterSetup::Average {
                weights,
                normalize_weights,
                ..
            } => AdapterSetup::Average {
                children,
                weights: weights.clone(),
                normalize_weights: *normalize_weights,
            },
            other => other.clone(),
        }
    }
}

/// The empty stack: no adapter, the base model.
pub(crate) fn base() -> AdapterSetup {
    AdapterSetup::Stack(Vec::new())
}

/// Every setup without row blocks that some row of some batch can run under `setup`: what
/// [`row_groups`] can return for any batch size. Without row blocks, `setup` itself.
pub(crate) fn variants(setup: &AdapterSetup) -> Vec<AdapterSetup> {
    let mut out = Vec::new();
    let mut push = |v: AdapterSetup| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    if !setup.has_row_blocks() {
        push(setup.clone());
        return out;
    }
    match setup {
        // Rows a row block does not cover run the base model.
        AdapterSetup::Parallel(children)
        | AdapterSetup::BatchSplit { children, .. }
        | AdapterSetup::MultiTask { children, .. } => {
            children.iter().flat_map(variants).for_each(&mut push);
            push(base());
        }
        AdapterSetup::PerRow(rows) => {
            rows.iter()
                .map(|row| row.clone().map_or_else(base, AdapterSetup::Name))
                .for_each(&mut push);
            push(base());
        }
        block => {
            let mut combos: Vec<Vec<AdapterSetup>> = vec![Vec::new()];
            for child in block.children() {
                let options = variants(child);
                combos = combos
                    .into_iter()
                    .flat_map(|combo| {
                        options.iter().map(move |option| {
                            let mut combo = combo.clone();
                            combo.push(option.clone());
                            combo
                        })
                    })
                    .collect();
            }
            combos
                .into_iter()
                .map(|children| block.with_children(children))
                .for_each(&mut push);
        }
    }
    out
}

/// Splits a batch of `batch` rows into groups, each with a setup free of row blocks. Rows a
/// `BatchSplit` or `PerRow` does not cover (when the batch is larger than their sizes) run the
/// base model; a `Parallel` block splits the batch into equal chunks, one per child (the host
/// repeated its input that many times), and a remainder runs the base model.
pub(crate) fn row_groups(setup: &AdapterSetup, batch: usize) -> Vec<SetupRows> {
    if !setup.has_row_blocks() {
        return vec![SetupRows {
            rows: (0..batch).collect(),
            setup: setup.clone(),
        }];
    }
    let mut groups = match setup {
        AdapterSetup::Parallel(children) => {
            let chunk = batch / children.len().max(1);
            consecutive(children.iter().map(|child| (child, chunk)), batch)
        }
        AdapterSetup::BatchSplit {
            children,
            batch_sizes,
        } => consecutive(children.iter().zip(batch_sizes.iter().copied()), batch),
        AdapterSetup::PerRow(assignment) => per_row(assignment, batch),
        AdapterSetup::MultiTask { children, task_ids } => by_task(children, task_ids, batch),
        block => product(block, batch),
    };
    groups.retain(|g| !g.rows.is_empty());
    groups
}

/// Children on consecutive row ranges of the given sizes (cut at the batch); the rest of the
/// batch runs the base model.
fn consecutive<'a>(
    children: impl Iterator<Item = (&'a AdapterSetup, usize)>,
    batch: usize,
) -> Vec<SetupRows> {
    let mut groups = Vec::new();
    let mut start = 0;
    for (child, size) in children {
        let size = size.min(batch - start);
        groups.extend(row_groups(child, size).into_iter().map(|g| SetupRows {
            rows: g.rows.into_iter().map(|r| r + start).collect(),
            setup: g.setup,
        }));
        start += size;
    }
    if start < batch {
        groups.push(SetupRows {
            rows: (start..batch).collect(),
            setup: base(),
        });
    }
    groups
}

/// One group per distinct assignment of `PerRow`, its rows gathered.
fn per_row(assignment: &[Option<String>], batch: usize) -> Vec<SetupRows> {
    let mut groups: Vec<(Option<&String>, Vec<usize>)> = Vec::new();
    for row in 0..batch {
        let name = assignment.get(row).and_then(Option::as_ref);
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((name, vec![row])),
        }
    }
    groups
        .into_iter()
        .map(|(name, rows)| SetupRows {
            rows,
            setup: name.map_or_else(base, |n| AdapterSetup::Name(n.clone())),
        })
        .collect()
}

/// One group per task of `MultiTask` (its child's groups on the task's rows), rows without a
/// task running the base model.
fn by_task(children: &[AdapterSetup], task_ids: &[usize], batch: usize) -> Vec<SetupRows> {
    let mut groups = Vec::new();
    for (task, child) in children.iter().enumerate() {
        let rows: Vec<usize> = (0..batch)
            .filter(|row| task_ids.get(*row) == Some(&task))
            .collect();
        groups.extend(
            row_groups(child, rows.len())
                .into_iter()
                .map(|g| SetupRows {
                    rows: g.rows.into_iter().map(|r| rows[r]).collect(),
                    setup: g.setup,
                }),
        );
    }
    let rest: Vec<usize> = (task_ids.len().min(batch)..batch).collect();
    groups.push(SetupRows {
        rows: rest,
        setup: base(),
    });
    groups
}

/// Stack, Fuse, Split, Average over children with row blocks: the rows that every child routes
/// alike, each with the block over the children's setups there.
fn product(block: &AdapterSetup, batch: usize) -> Vec<SetupRows> {
    let mut acc = vec![(
        (0..batch).collect::<Vec<usize>>(),
        Vec::<AdapterSetup>::new(),
    )];
    for child in block.children() {
        let child_groups = row_groups(child, batch);
        let mut next = Vec::new();
        for (rows, chosen) in &acc {
            for group in &child_groups {
                let common: Vec<usize> = rows
                    .iter()
                    .copied()
                    .filter(|r| group.rows.binary_search(r).is_ok())
                    .collect();
                if !common.is_empty() {
                    let mut chosen = chosen.clone();
                    chosen.push(group.setup.clone());
                    next.push((common, chosen));
                }
            }
        }
        acc = next;
    }
    acc.into_iter()
        .map(|(rows, children)| SetupRows {
            rows,
            setup: block.with_children(children),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(text: &str) -> AdapterSetup {
        AdapterSetup::parse(text).unwrap()
    }

    #[test]
    fn row_blocks_distribute_over_stacks() {
        let groups = row_groups(&setup("Stack[c, Parallel[a, b]]"), 4);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].rows, [0, 1]);
        assert_eq!(groups[0].setup.to_string(), "Stack[c, a]");
        assert_eq!(groups[1].rows, [2, 3]);
        assert_eq!(groups[1].setup.to_string(), "Stack[c, b]");

        let groups = row_groups(&setup("BatchSplit[Stack[c, a], b](batch_sizes=1,2)"), 4);
        let summary: Vec<_> = groups
            .iter()
            .map(|g| (g.rows.clone(), g.setup.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                (vec![0], "Stack[c, a]".to_string()),
                (vec![1, 2], "b".to_string()),
                (vec![3], "Stack[]".to_string())
            ]
        );

        let groups = row_groups(
            &AdapterSetup::PerRow(vec![Some("a".into()), None, Some("a".into())]),
            3,
        );
        assert_eq!(groups[0].rows, [0, 2]);
        assert_eq!(groups[1].setup, base());
        assert!(!setup("Stack[a, b]").has_row_blocks());
    }

    #[test]
    fn every_group_setup_is_a_variant() {
        for text in [
            "Stack[c, Parallel[a, b]]",
            "BatchSplit[Stack[c, a], b](batch_sizes=1,2)",
            "Stack[BatchSplit[a, b](batch_sizes=1,1), Split[c, BatchSplit[a, b](batch_sizes=2,1)](splits=2,2)]",
            "PerRow[a, (), b, a]",
            "Stack[a, MultiTask[b, Stack[a, c]](task_ids=1,0,1)]",
            "Stack[a, b]",
        ] {
            let setup = setup(text);
            let variants = variants(&setup);
            for batch in 0..8 {
                for group in row_groups(&setup, batch) {
                    assert!(
                        variants.contains(&group.setup),
                        "{text}, batch {batch}: {} is not among {variants:?}",
                        group.setup
                    );
                }
            }
        }
    }
}
