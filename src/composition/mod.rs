//! Adapter setups: which adapters are active and how they combine (AdapterHub's composition
//! blocks), with a text form.
//!
//! | block | meaning |
//! |---|---|
//! | `a` | one adapter |
//! | `Stack[a, b]` | `b` runs on the output of `a` |
//! | `Fuse[a, b]` | AdapterFusion: attention over the adapters' outputs (needs `add_adapter_fusion`) |
//! | `Split[a, b](splits=3,4)` | sequence positions `0..3` go through `a`, `3..7` through `b` |
//! | `BatchSplit[a, b](batch_sizes=1,1)` | row 0 goes through `a`, row 1 through `b` |
//! | `Parallel[a, b]` | the batch runs once per child; output `i` is child `i` alone |
//! | `Average[a, b](weights=0.3,0.7)` | weighted average of the children's outputs |
//! | `PerRow[a, (), b]` | row `i` uses its own adapter; `()` is the base model (an extension) |
//! | `MultiTask[a, b](task_ids=1,0,1)` | row `i` goes through child `task_ids[i]` (MTL-LoRA) |

mod convert;
mod plan;
mod rows;
mod text;

pub use convert::{IntoAdapterSetup, IntoFusionKey};
pub(crate) use plan::{ActivePlan, Routing, Rows};

use crate::error::{Error, Result};
use crate::names::{FusionKey, validate_name};

/// The active adapter setup of a model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AdapterSetup {
    /// A single adapter.
    Name(String),
    /// Children applied in sequence; names not present at a site are skipped there.
    Stack(Vec<AdapterSetup>),
    /// AdapterFusion over the children's outputs.
    Fuse(Vec<AdapterSetup>),
    /// Children applied to consecutive slices of the sequence, of the given lengths.
    Split {
        /// One child per slice.
        children: Vec<AdapterSetup>,
        /// Sequence length of each slice.
        splits: Vec<usize>,
    },
    /// Children applied to consecutive slices of the batch, of the given sizes.
    BatchSplit {
        /// One child per slice.
        children: Vec<AdapterSetup>,
        /// Rows of each slice.
        batch_sizes: Vec<usize>,
    },
    /// The input batch is repeated once per child; copy `i` runs through child `i`.
    Parallel(Vec<AdapterSetup>),
    /// Weighted average of the children's outputs.
    Average {
        /// The averaged children.
        children: Vec<AdapterSetup>,
        /// One weight per child.
        weights: Vec<f64>,
        /// Divide the weights by their sum (AdapterHub's default).
        normalize_weights: bool,
    },
    /// Row `i` of the batch uses adapter `rows[i]` (`None`: the base model). Not in AdapterHub.
    PerRow(Vec<Option<String>>),
    /// Row `i` of the batch runs child `task_ids[i]` (AdapterHub's `MultiTask` with the
    /// forward's `task_ids`); rows past the list run the base model.
    MultiTask {
        /// One child per task.
        children: Vec<AdapterSetup>,
        /// The task of each row.
        task_ids: Vec<usize>,
    },
}

/// The kind of a setup node, for nesting rules and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Name,
    Stack,
    Fuse,
    Split,
    BatchSplit,
    Parallel,
    Average,
    PerRow,
    MultiTask,
}

impl Kind {
    /// AdapterHub's `ALLOWED_NESTINGS`: which kinds may appear directly inside this one.
    fn allows(self, child: Kind) -> bool {
        use Kind::*;
        match self {
            Stack => matches!(
                child,
                Name | Fuse | Split | Parallel | BatchSplit | Average | MultiTask
            ),
            MultiTask => matches!(child, Name | Stack | Average | Fuse),
            Fuse => matches!(child, Name | Stack),
            Split => matches!(child, Name | Split | Stack | BatchSplit | Average),
            Parallel => matches!(child, Name | Stack | BatchSplit | Average),
            BatchSplit => matches!(child, Name | Stack | Split | BatchSplit | Average),
            Average => matches!(child, Name | Stack | Split | BatchSplit),
            Name | PerRow => false,
        }
    }
}

impl AdapterSetup {
    /// A stack of the given adapter names.
    pub fn stack<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AdapterSetup::Stack(
            names
                .into_iter()
                .map(|n| AdapterSetup::Name(n.into()))
                .collect(),
        )
    }

    /// `MultiTask` over the given adapter names, row `i` running `names[task_ids[i]]`.
    pub fn multi_task<S: Into<String>>(
        names: impl IntoIterator<Item = S>,
        task_ids: impl IntoIterator<Item = usize>,
    ) -> Self {
        AdapterSetup::MultiTask {
            children: names
                .into_iter()
                .map(|n| AdapterSetup::Name(n.into()))
                .collect(),
            task_ids: task_ids.into_iter().collect(),
        }
    }

    /// `Average` of the given names with the given weights (normalised).
    pub fn average<S: Into<String>>(children: impl IntoIterator<Item = (S, f64)>) -> Self {
        let (children, weights) = children
            .into_iter()
            .map(|(n, w)| (AdapterSetup::Name(n.into()), w))
            .unzip();
        AdapterSetup::Average {
            children,
            weights,
            normalize_weights: true,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            AdapterSetup::Name(_) => Kind::Name,
            AdapterSetup::Stack(_) => Kind::Stack,
            AdapterSetup::Fuse(_) => Kind::Fuse,
            AdapterSetup::Split { .. } => Kind::Split,
            AdapterSetup::BatchSplit { .. } => Kind::BatchSplit,
            AdapterSetup::Parallel(_) => Kind::Parallel,
            AdapterSetup::Average { .. } => Kind::Average,
            AdapterSetup::PerRow(_) => Kind::PerRow,
            AdapterSetup::MultiTask { .. } => Kind::MultiTask,
        }
    }

    /// The direct children of a block (empty for a name).
    pub fn children(&self) -> &[AdapterSetup] {
        match self {
            AdapterSetup::Name(_) | AdapterSetup::PerRow(_) => &[],
            AdapterSetup::Stack(c) | AdapterSetup::Fuse(c) | AdapterSetup::Parallel(c) => c,
            AdapterSetup::Split { children, .. }
            | AdapterSetup::BatchSplit { children, .. }
            | AdapterSetup::Average { children, .. }
            | AdapterSetup::MultiTask { children, .. } => children,
        }
    }

    /// Every adapter name in the setup, in order of appearance (with repeats).
    pub fn names(&self) -> Vec<&str> {
        match self {
            AdapterSetup::Name(name) => vec![name.as_str()],
            AdapterSetup::PerRow(rows) => rows.iter().flatten().map(String::as_str).collect(),
            _ => self.children().iter().flat_map(|c| c.names()).collect(),
        }
    }

    /// The first adapter name (AdapterHub's `first()`).
    pub fn first(&self) -> Option<&str> {
        match self {
            AdapterSetup::Name(name) => Some(name),
            AdapterSetup::PerRow(rows) => rows.iter().flatten().next().map(String::as_str),
            _ => self.children().iter().find_map(AdapterSetup::first),
        }
    }

    /// The last adapter name (AdapterHub's `last()`).
    pub fn last(&self) -> Option<&str> {
        match self {
            AdapterSetup::Name(name) => Some(name),
            AdapterSetup::PerRow(rows) => rows.iter().flatten().next_back().map(String::as_str),
            _ => self.children().iter().rev().find_map(AdapterSetup::last),
        }
    }

    /// How many copies of the input batch the setup runs (the children of its `Parallel`
    /// block, 1 without one). A host repeats its input that many times along the batch.
    pub fn parallel_channels(&self) -> usize {
        match self {
            AdapterSetup::Parallel(children) => children.len(),
            _ => self
                .children()
                .iter()
                .map(AdapterSetup::parallel_channels)
                .max()
                .unwrap_or(1),
        }
    }

    /// The key of the fusion layer a `Fuse` block runs: the last adapter of each child, as
    /// AdapterHub's `Fuse.name` (`Fuse[Stack[a, b], c]` runs the layer `b,c`).
    pub fn fusion_key(&self) -> Option<FusionKey> {
        match self {
            AdapterSetup::Fuse(children) => {
                FusionKey::new(children.iter().filter_map(AdapterSetup::last)).ok()
            }
            _ => None,
        }
    }

    /// The keys of every `Fuse` block in the setup, outermost first.
    pub fn fusion_keys(&self) -> Vec<FusionKey> {
        let mut keys: Vec<FusionKey> = self.fusion_key().into_iter().collect();
        for child in self.children() {
            keys.extend(child.fusion_keys());
        }
        keys
    }

    /// An `Average` block's children, each with the factor its output is multiplied by: its weight,
    /// divided by the weights' sum when they are normalised. Empty for other blocks.
    pub(crate) fn weighted_children(&self) -> Vec<(&AdapterSetup, f64)> {
        let AdapterSetup::Average {
            children,
            weights,
            normalize_weights,
        } = self
        else {
            return Vec::new();
        };
        let total: f64 = if *normalize_weights {
            weights.iter().sum()
        } else {
            1.0
        };
        children
            .iter()
            .zip(weights)
            .map(|(c, w)| (c, w / total))
            .collect()
    }

    /// Checks the nesting rules of AdapterHub's `ALLOWED_NESTINGS`, block arguments, and names;
    /// the error names the offending block.
    pub fn validate(&self) -> Result<()> {
        if self.count_parallel() > 1 {
            return Err(Error::InvalidSetup(format!(
                "`{self}` holds more than one Parallel block"
            )));
        }
        self.validate_node()
    }

    fn count_parallel(&self) -> usize {
        usize::from(self.kind() == Kind::Parallel)
            + self
                .children()
                .iter()
                .map(Self::count_parallel)
                .sum::<usize>()
    }

    fn validate_node(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidSetup(format!("`{self}`: {reason}")));
        match self {
            AdapterSetup::Name(name) => return validate_name(name),
            AdapterSetup::PerRow(rows) => {
                if rows.is_empty() {
                    return invalid("PerRow needs at least one row".into());
                }
                for name in rows.iter().flatten() {
                    validate_name(name)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let children = self.children();
        if children.is_empty() {
            return invalid("a block needs at least one child".into());
        }
        match self {
            AdapterSetup::Split { splits, .. } if splits.len() != children.len() => {
                return invalid(format!(
                    "{} splits for {} children",
                    splits.len(),
                    children.len()
                ));
            }
            AdapterSetup::BatchSplit { batch_sizes, .. } if batch_sizes.len() != children.len() => {
                return invalid(format!(
                    "{} batch_sizes for {} children",
                    batch_sizes.len(),
                    children.len()
                ));
            }
            AdapterSetup::Average {
                weights,
                normalize_weights,
                ..
            } => {
                if weights.len() != children.len() {
                    return invalid(format!(
                        "{} weights for {} children",
                        weights.len(),
                        children.len()
                    ));
                }
                if weights.iter().any(|w| !w.is_finite()) {
                    return invalid("weights must be finite".into());
                }
                if *normalize_weights && weights.iter().sum::<f64>() == 0.0 {
                    return invalid("weights sum to 0 and cannot be normalised".into());
                }
            }
            AdapterSetup::Fuse(_) if children.len() < 2 => {
                return invalid("Fuse needs at least two adapters".into());
            }
            AdapterSetup::MultiTask { task_ids, .. } => {
                if let Some(task) = task_ids.iter().find(|t| **t >= children.len()) {
                    return invalid(format!(
                        "task_ids holds task {task}, but the block has tasks 0..{}",
                        children.len()
                    ));
                }
            }
            _ => {}
        }
        for child in children {
            if !self.kind().allows(child.kind()) {
                return Err(Error::InvalidSetup(format!(
                    "`{child}` cannot be nested in `{self}` (AdapterHub's nesting rules)"
                )));
            }
            child.validate_node()?;
        }
        Ok(())
    }
}
