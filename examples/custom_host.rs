//! Adapting your own burn transformer: implement `AdapterHost`, call a `ResidualSite` where each
//! residual block adds its residual (bottleneck adapters) and wrap projections in `LinearSite`s
//! (LoRA, IA3). The whole model API then works on your model.
//!
//! ```text
//! cargo run --example custom_host
//! ```

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, activation::gelu};
use burn_adapters::prelude::*;
use burn_adapters::sites::{
    LinearLocation, LinearPosition, LinearSite, ResidualSite, SharedParameters, SiteLocation,
    SitePosition,
};
use burn_adapters::{AdapterRegistry, AdapterSummary};

/// A post-norm MLP block: `LN(x + W2·gelu(W1·x))`.
#[derive(Module, Debug)]
struct Block {
    /// Projections wrapped in linear sites take LoRA/IA3 (`intermediate_lora`, `output_lora`).
    up: LinearSite,
    down: LinearSite,
    norm: LayerNorm,
    /// The site sits where the block adds its residual (bottleneck adapters, fusion).
    residual: ResidualSite,
}

#[derive(Module, Debug)]
struct MyModel {
    blocks: Vec<Block>,
    /// What an adapter shares across blocks (Compacter's PHM rule), read by every residual site.
    shared: SharedParameters,
    width: usize,
    /// The registry of adapter names, configs and the active setup.
    #[module(skip)]
    registry: AdapterRegistry,
}

impl MyModel {
    fn new(width: usize, depth: usize, device: &Device) -> Self {
        let blocks = (0..depth)
            .map(|layer| Block {
                up: LinearSite::new(
                    LinearConfig::new(width, 4 * width).init(device),
                    LinearLocation {
                        layer,
                        position: LinearPosition::Intermediate,
                    },
                ),
                down: LinearSite::new(
                    LinearConfig::new(4 * width, width).init(device),
                    LinearLocation {
                        layer,
                        position: LinearPosition::Output,
                    },
                ),
                norm: LayerNormConfig::new(width).init(device),
                residual: ResidualSite::new(SiteLocation {
                    layer,
                    position: SitePosition::Output,
                }),
            })
            .collect();
        Self {
            blocks,
            shared: SharedParameters::new(),
            width,
            registry: AdapterRegistry::default(),
        }
    }

    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.blocks {
            let h = block.down.forward(gelu(block.up.forward(x.clone())));
            // instead of `block.norm.forward(h + x)`:
            x = block
                .residual
                .forward(h, x, Some(&block.norm), &self.shared);
        }
        x
    }
}

impl AdapterHost for MyModel {
    fn hidden_size(&self) -> usize {
        self.width
    }
    fn num_layers(&self) -> usize {
        self.blocks.len()
    }
    fn residual_sites(&self) -> impl Iterator<Item = &ResidualSite> {
        self.blocks.iter().map(|b| &b.residual)
    }
    fn residual_sites_mut(&mut self) -> impl Iterator<Item = &mut ResidualSite> {
        self.blocks.iter_mut().map(|b| &mut b.residual)
    }
    fn linear_sites(&self) -> impl Iterator<Item = &LinearSite> {
        self.blocks.iter().flat_map(|b| [&b.up, &b.down])
    }
    fn linear_sites_mut(&mut self) -> impl Iterator<Item = &mut LinearSite> {
        self.blocks
            .iter_mut()
            .flat_map(|b| [&mut b.up, &mut b.down])
    }
    fn shared_parameters(&self) -> Option<&SharedParameters> {
        Some(&self.shared)
    }
    fn shared_parameters_mut(&mut self) -> Option<&mut SharedParameters> {
        Some(&mut self.shared)
    }
    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }
    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }
}

fn main() -> burn_adapters::Result<()> {
    // Training (`train_adapter`) needs a device that records gradients.
    let device = Device::flex().autodiff();
    let mut model = MyModel::new(64, 3, &device);
    let x = Tensor::<3>::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
    let base = model.forward(x.clone());

    // Pfeiffer adapters at every block, then a second one for another task.
    model.add_adapter("task_a", AdapterConfig::load("seq_bn[reduction_factor=8]")?)?;
    model.add_adapter(
        "task_b",
        AdapterConfig::load("seq_bn[reduction_factor=4,leave_out=[0]]")?,
    )?;
    // LoRA in both projections of every block (this host has no attention, so no q/k/v).
    model.add_adapter(
        "task_c",
        AdapterConfig::load(
            "lora[r=4,selfattn_lora=False,intermediate_lora=True,output_lora=True,init_weights=bert]",
        )?,
    )?;
    model.train_adapter("task_a")?;
    let summary: AdapterSummary = model.adapter_summary();
    println!("{summary}");

    let with_a = model.forward(x.clone());
    model.deactivate_adapters();
    let again = model.forward(x.clone());
    let x_lora = x;
    let changed = (with_a - base.clone()).abs().max().into_scalar::<f32>();
    let restored = (again - base).abs().max().into_scalar::<f32>();
    println!("max |Δ| with task_a active: {changed:.4}; after deactivating: {restored}");
    assert_eq!(restored, 0.0);

    // A LoRA folds into the weights: same outputs, no extra cost at inference.
    model.set_active_adapters("task_c")?;
    let unmerged = model.forward(x_lora.clone());
    model.merge_adapter("task_c")?;
    let merged = model.forward(x_lora);
    let gap = (merged - unmerged).abs().max().into_scalar::<f32>();
    println!("task_c merged vs unmerged: max |Δ| = {gap:.1e}");
    model.reset_adapter();

    let dir = std::env::temp_dir().join("burn-adapters-custom-host");
    model.save_adapter(&dir, "task_a")?;
    println!("saved task_a to {}", dir.display());
    Ok(())
}
