//! Reference hosts: Hugging Face BERT, Llama-family and GPT-2 decoders, and burn's `TransformerEncoder`,
//! all adapter-ready.

pub mod bert;
pub mod decoder;
pub mod encoder;
mod export;
pub mod gpt2;
mod hf_config;
mod input_checks;
#[cfg(feature = "train")]
mod learner;
pub mod llama;
