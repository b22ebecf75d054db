//! Sites: the points of a host model where adapters act.

mod named;
mod residual;

pub use named::*;
pub use residual::*;
