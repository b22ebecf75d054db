//! Row blocks (`Parallel`, `BatchSplit`, `PerRow`) resolved into groups of rows, each with a
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
pub(crate) struct RowGroup {
    pub rows: Vec<usize>,
    pub setup: AdapterSetup,
}

impl AdapterSetup {
    /// Whether the setup routes rows (holds `Parallel`, `BatchSplit` or `PerRow`).
    pub(crate) fn has_row_blocks(&self) -> bool {
        matches!(
            self,
            AdapterSetup::Parallel(_) | AdapterSetup::BatchSplit { .. } | AdapterSetup::PerRow(_)
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
fn base() -> AdapterSetup {
    AdapterSetup::Stack(Vec::new())
}

/// Splits a batch of `batch` rows into groups. Rows a `BatchSplit` or `PerRow` does not cover
/// (when the batch is larger than their sizes) run the base model; a `Parallel` block splits the
/// batch into equal chunks, one per child (the host repeated its input that many times).
pub(crate) fn row_groups(setup: &AdapterSetup, batch: usize) -> Vec<RowGroup> {
    let all = |setup: AdapterSetup| RowGroup {
        rows: (0..batch).collect(),
        setup,
    };
    if !setup.has_row_blocks() {
        return vec![all(setup.clone())];
    }
    let offset = |groups: Vec<RowGroup>, start: usize| {
        groups.into_iter().map(move |g| RowGroup {
            rows: g.rows.into_iter().map(|r| r + start).collect(),
            setup: g.setup,
        })
    };
    match setup {
        AdapterSetup::Parallel(children) => {
            let chunk = batch / children.len().max(1);
            let mut groups: Vec<RowGroup> = children
                .iter()
                .enumerate()
                .flat_map(|(i, child)| offset(row_groups(child, chunk), i * chunk))
                .collect();
            // A batch the host did not repeat evenly: the remainder runs the base model.
            let covered = chunk * children.len();
            if covered < batch {
                groups.push(RowGroup {
                    rows: (covered..batch).collect(),
                    setup: base(),
                });
            }
            groups.retain(|g| !g.rows.is_empty());
            groups
        }
        AdapterSetup::BatchSplit {
            children,
            batch_sizes,
        } => {
            let mut groups = Vec::new();
            let mut start = 0;
            for (child, size) in children.iter().zip(batch_sizes) {
                let size = (*size).min(batch.saturating_sub(start));
                groups.extend(offset(row_groups(child, size), start));
                start += size;
            }
            if start < batch {
                groups.push(RowGroup {
                    rows: (start..batch).collect(),
                    setup: base(),
                });
            }
            groups.retain(|g| !g.rows.is_empty());
            groups
        }
        AdapterSetup::PerRow(assignment) => {
            // One group per distinct assignment, rows gathered.
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
                .map(|(name, rows)| RowGroup {
                    rows,
                    setup: name.map_or_else(base, |n| AdapterSetup::Name(n.clone())),
                })
                .collect()
        }
        // Stack, Fuse, Split, Average: the product of the children's groups.
        block => {
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
                .map(|(rows, children)| RowGroup {
                    rows,
                    setup: block.with_children(children),
                })
                .collect()
        }
    }
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
}
