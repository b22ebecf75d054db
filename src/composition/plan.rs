//! The active setup compiled once, when it is activated, into what every site shares: the
//! setups rows can run ("variants"), how a batch's rows are routed to them, and how many copies
//! of the batch the host runs.

use std::sync::{Arc, Mutex};

use super::AdapterSetup;
use super::rows::{row_groups, variants};

/// An activated [`AdapterSetup`], compiled for the sites.
///
/// Sites resolve each variant against what they hold once, when the plan reaches them; in the
/// forward they only look up which rows run which variant ([`ActivePlan::routing`]), computed
/// once per batch size.
#[derive(Debug)]
pub(crate) struct ActivePlan {
    setup: AdapterSetup,
    variants: Vec<AdapterSetup>,
    row_blocks: bool,
    parallel_channels: usize,
    /// Layers whose sites run no adapter (AdapterDrop).
    skip_layers: Vec<usize>,
    /// Routings by batch size, most recent last.
    routings: Mutex<Vec<(usize, Arc<Routing>)>>,
}

/// How many batch sizes a plan remembers the routing of.
const ROUTINGS_KEPT: usize = 8;

/// Which rows of a batch run which variant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routing {
    /// The groups, in the order their outputs are concatenated.
    pub groups: Vec<RowGroup>,
    /// Batch row `i` is row `restore[i]` of the concatenated outputs; `None` when that is row
    /// `i` itself.
    pub restore: Option<Vec<i64>>,
}

/// Rows of a batch that run one variant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowGroup {
    /// Index into [`ActivePlan::variants`].
    pub variant: usize,
    /// The rows.
    pub rows: Rows,
}

/// A set of batch rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rows {
    /// `start..start + len`.
    Range {
        /// First row.
        start: usize,
        /// Number of rows.
        len: usize,
    },
    /// Rows in ascending order, not consecutive.
    Gather(Vec<i64>),
}

impl ActivePlan {
    /// Compiles a validated setup.
    pub fn new(setup: AdapterSetup) -> Self {
        Self {
            variants: variants(&setup),
            row_blocks: setup.has_row_blocks(),
            parallel_channels: setup.parallel_channels(),
            setup,
            skip_layers: Vec::new(),
            routings: Mutex::new(Vec::new()),
        }
    }

    /// The same plan with no adapter running in `layers` (AdapterHub's `skip_layers`).
    pub fn skipping(mut self, layers: &[usize]) -> Self {
        self.skip_layers = layers.to_vec();
        self
    }

    /// Whether the sites of `layer` run no adapter.
    pub fn skips(&self, layer: usize) -> bool {
        self.skip_layers.contains(&layer)
    }

    /// The layers whose sites run no adapter.
    pub fn skip_layers(&self) -> &[usize] {
        &self.skip_layers
    }

    /// The setup this plan runs.
    pub fn setup(&self) -> &AdapterSetup {
        &self.setup
    }

    /// The setups without row blocks that rows run; the setup itself when it has no row blocks.
    pub fn variants(&self) -> &[AdapterSetup] {
        &self.variants
    }

    /// Whether rows of a batch run different variants.
    pub fn routes_rows(&self) -> bool {
        self.row_blocks
    }

    /// Copies of the input batch the host runs (the children of a `Parallel` block, else 1).
    pub fn parallel_channels(&self) -> usize {
        self.parallel_channels
    }

    /// The routing of a batch of `batch` rows (computed at the first batch of that size).
    pub fn routing(&self, batch: usize) -> Arc<Routing> {
        let mut routings = self
            .routings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, routing)) = routings.iter().find(|(size, _)| *size == batch) {
            return routing.clone();
        }
        let routing = Arc::new(self.route(batch));
        if routings.len() == ROUTINGS_KEPT {
            routings.remove(0);
        }
        routings.push((batch, routing.clone()));
        routing
    }

    fn route(&self, batch: usize) -> Routing {
        let groups: Vec<RowGroup> = row_groups(&self.setup, batch)
            .into_iter()
            .map(|group| RowGroup {
                variant: self
                    .variants
                    .iter()
                    .position(|v| *v == group.setup)
                    .expect("every row group runs one of the plan's variants"),
                rows: Rows::of(group.rows),
            })
            .collect();
        let order: Vec<usize> = groups.iter().flat_map(|g| g.rows.iter()).collect();
        let restore = (!order.iter().enumerate().all(|(i, r)| i == *r)).then(|| {
            let mut inverse = vec![0i64; order.len()];
            for (k, row) in order.iter().enumerate() {
                inverse[*row] = k as i64;
            }
            inverse
        });
        Routing { groups, restore }
    }
}

impl Rows {
    fn of(rows: Vec<usize>) -> Self {
        let consecutive = rows.windows(2).all(|w| w[1] == w[0] + 1);
        match rows.first() {
            Some(&start) if consecutive => Rows::Range {
                start,
                len: rows.len(),
            },
            _ => Rows::Gather(rows.into_iter().map(|r| r as i64).collect()),
        }
    }

    /// The rows, ascending.
    pub fn iter(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Rows::Range { start, len } => Box::new(*start..start + len),
            Rows::Gather(rows) => Box::new(rows.iter().map(|r| *r as usize)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_groups_rows_by_variant_and_restores_their_order() {
        let plan = ActivePlan::new(AdapterSetup::parse("PerRow[a, (), a, b]").unwrap());
        assert!(plan.routes_rows());
        let routing = plan.routing(4);
        let names: Vec<String> = routing
            .groups
            .iter()
            .map(|g| plan.variants()[g.variant].to_string())
            .collect();
        assert_eq!(names, ["a", "Stack[]", "b"]);
        assert_eq!(routing.groups[0].rows, Rows::Gather(vec![0, 2]));
        assert_eq!(routing.groups[1].rows, Rows::Range { start: 1, len: 1 });
        // concatenated order: 0, 2, 1, 3
        assert_eq!(routing.restore, Some(vec![0, 2, 1, 3]));
        assert!(Arc::ptr_eq(&routing, &plan.routing(4)));

        let plan = ActivePlan::new(AdapterSetup::parse("Stack[a, b]").unwrap());
        assert!(!plan.routes_rows());
        assert_eq!(plan.variants().len(), 1);
    }
}
