//! Reference host models.

pub mod bert;
