//! Sites: the points of a host model where adapters act.

mod linear;
mod named;
mod residual;

pub use linear::*;
pub use named::*;
pub use residual::*;
