//! Reference hosts: Hugging Face BERT and Llama-family decoders, and burn's `TransformerEncoder`,
//! all adapter-ready.

pub mod bert;
pub mod encoder;
mod hf_config;
mod input_checks;
pub mod llama;
