//! Reading and writing adapters in AdapterHub's file formats, and LoRAs in Hugging Face PEFT's.
//!
//! Tensor names and layouts follow AdapterHub exactly (see [`keys`]), so an adapter saved here
//! loads in Python and the other way round. Reads never change a model: the adapter is built
//! and checked completely before it is installed. Writes go through temporary files and renames.

pub(crate) mod adapterhub;
pub(crate) mod fusion;
pub mod keys;
pub(crate) mod peft;
pub mod tensors;
mod transfer;

pub use adapterhub::{
    CONFIG_FILE, FORMAT_VERSION, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, PYTORCH_HEAD_WEIGHTS_FILE,
    PYTORCH_WEIGHTS_FILE, WEIGHTS_FILE,
};
pub use fusion::{FUSION_CONFIG_FILE, FUSION_WEIGHTS_FILE, PYTORCH_FUSION_WEIGHTS_FILE};
pub use peft::{PEFT_CONFIG_FILE, PEFT_PYTORCH_WEIGHTS_FILE, PEFT_WEIGHTS_FILE};
