//! File formats: AdapterHub's adapter, head and fusion directories, and Hugging Face PEFT's
//! LoRA directory.
//!
//! This layer knows formats only. Reading gives a plain value (the config and the tensors by
//! AdapterHub key, in torch layout); writing takes one. Building modules from such a value and
//! installing them in a host is the model's part (`model::persist`). Tensor names and layouts
//! follow AdapterHub exactly, so an adapter saved here loads in Python and the other way round.
//! Writes go through temporary files and renames, and configs record the checksum of the
//! weights saved with them.

pub(crate) mod adapterhub;
mod envelope;
pub(crate) mod fusion;
pub(crate) mod keys;
pub(crate) mod peft;
pub(crate) mod tensors;

pub use adapterhub::{
    CONFIG_FILE, HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, PYTORCH_HEAD_WEIGHTS_FILE,
    PYTORCH_WEIGHTS_FILE, WEIGHTS_FILE,
};
pub use envelope::{FORMAT_VERSION, ModelInfo};
pub(crate) use envelope::{WeightsFile, in_file};
pub use fusion::{FUSION_CONFIG_FILE, FUSION_WEIGHTS_FILE, PYTORCH_FUSION_WEIGHTS_FILE};
pub use peft::{PEFT_CONFIG_FILE, PEFT_PYTORCH_WEIGHTS_FILE, PEFT_WEIGHTS_FILE};
