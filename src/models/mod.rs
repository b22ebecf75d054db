//! Reference hosts: a Hugging Face BERT and burn's `TransformerEncoder`, both adapter-ready.

pub mod bert;
pub mod encoder;
