//! Reading and writing adapters in AdapterHub's file formats.
//!
//! Tensor names and layouts follow AdapterHub exactly (see [`keys`]), so an adapter saved here
//! loads in Python and the other way round. Reads never change a model: the adapter is built
//! and checked completely before it is installed. Writes go through temporary files and renames.

pub(crate) mod adapterhub;
pub mod keys;
pub mod tensors;
mod transfer;

pub use adapterhub::{
    CONFIG_FILE, FORMAT_VERSION, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, PYTORCH_HEAD_WEIGHTS_FILE,
    PYTORCH_WEIGHTS_FILE, WEIGHTS_FILE,
};
