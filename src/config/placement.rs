//! Where in a transformer a config places its modules: the locations of sites, and the rules of
//! `mh_adapter`/`output_adapter`, `attn_matrices`, `intermediate_lora`, `output_lora` and
//! `leave_out`.

use std::fmt;

use super::{AdapterConfig, AttnMatrix, BnConfig, LoRAConfig};

/// Which residual block of a transformer layer a residual site follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SitePosition {
    /// After the multi-head attention output (AdapterHub's `mh_adapter` location).
    Attention,
    /// After the feed-forward output (AdapterHub's `output_adapter` location).
    Output,
}

/// Where a residual site sits in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteLocation {
    /// Index of the transformer layer.
    pub layer: usize,
    /// Residual block within the layer.
    pub position: SitePosition,
}

impl fmt::Display for SiteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = match self.position {
            SitePosition::Attention => "attention",
            SitePosition::Output => "output",
        };
        write!(f, "layer {} {position}", self.layer)
    }
}

/// Which projection of a transformer layer a linear site wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearPosition {
    /// Attention query projection (`attn_matrices` entry `q`).
    Query,
    /// Attention key projection (`k`).
    Key,
    /// Attention value projection (`v`).
    Value,
    /// First feed-forward projection (`intermediate_lora`).
    Intermediate,
    /// Second feed-forward projection (`output_lora`).
    Output,
    /// The attention output projection (`attn_matrices` entry `o`; an extension).
    AttentionOutput,
    /// The gate projection of a gated feed-forward block (`gate_lora`; an extension).
    Gate,
    /// A fused query/key/value projection (GPT-2's `c_attn`): its modules update the blocks of
    /// the `attn_matrices` (see [`LoRAConfig::fused_blocks`]).
    QueryKeyValue,
}

/// Where a linear site sits in its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinearLocation {
    /// Index of the transformer layer.
    pub layer: usize,
    /// Projection within the layer.
    pub position: LinearPosition,
}

impl fmt::Display for LinearLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {} {:?}", self.layer, self.position)
    }
}

impl BnConfig {
    /// Whether this config puts a bottleneck at `location`.
    pub fn places_at(&self, location: SiteLocation) -> bool {
        let placed = match location.position {
            SitePosition::Attention => self.mh_adapter,
            SitePosition::Output => self.output_adapter,
        };
        placed && !self.leave_out.contains(&location.layer)
    }
}

impl LoRAConfig {
    /// Whether this config puts a module at `location`.
    pub fn places_at(&self, location: LinearLocation) -> bool {
        if self.leave_out.contains(&location.layer) {
            return false;
        }
        let attention = |matrix| self.selfattn_lora && self.attn_matrices.contains(&matrix);
        match location.position {
            LinearPosition::Query => attention(AttnMatrix::Q),
            LinearPosition::Key => attention(AttnMatrix::K),
            LinearPosition::Value => attention(AttnMatrix::V),
            LinearPosition::Intermediate => self.intermediate_lora,
            LinearPosition::Output => self.output_lora,
            LinearPosition::AttentionOutput => attention(AttnMatrix::O),
            LinearPosition::Gate => self.gate_lora,
            LinearPosition::QueryKeyValue => [AttnMatrix::Q, AttnMatrix::K, AttnMatrix::V]
                .into_iter()
                .any(attention),
        }
    }

    /// Which of a fused projection's query, key and value blocks the modules update.
    pub fn fused_blocks(&self) -> [bool; 3] {
        [AttnMatrix::Q, AttnMatrix::K, AttnMatrix::V].map(|m| self.attn_matrices.contains(&m))
    }
}

impl AdapterConfig {
    /// The bottleneck part of this config placed at `location`, if any.
    pub fn bottleneck_at(&self, location: SiteLocation) -> Option<&BnConfig> {
        self.parts()
            .iter()
            .find_map(|part| part.as_bottleneck().filter(|bn| bn.places_at(location)))
    }

    /// The LoRA/IA3 part of this config placed at `location`, if any.
    pub fn lora_at(&self, location: LinearLocation) -> Option<&LoRAConfig> {
        self.lora().filter(|lora| lora.places_at(location))
    }
}
