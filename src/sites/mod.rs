//! Sites: the points of a host model where adapters act.

mod linear;
mod named;
mod residual;
mod rows;

pub use linear::*;
pub use named::*;
pub use residual::*;
