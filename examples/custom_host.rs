//! Adapting your own burn transformer: implement `AdapterHost` and call a `ResidualSite` where
//! each residual block adds its residual. The whole model API then works on your model.
//!
//! ```text
//! cargo run --example custom_host
//! ```

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, activation::gelu};
use burn_adapters::prelude::*;
use burn_adapters::sites::{ResidualSite, SiteLocation, SitePosition};
use burn_adapters::{AdapterRegistry, AdapterSummary};

/// A post-norm MLP block: `LN(x + W2·gelu(W1·x))`.
#[derive(Module, Debug)]
struct Block {
    up: Linear,
    down: Linear,
    norm: LayerNorm,
    /// The site sits where the block adds its residual; name it `adapters` (or `*_adapters`).
    adapters: ResidualSite,
}

#[derive(Module, Debug)]
struct MyModel {
    blocks: Vec<Block>,
    width: usize,
    /// The registry of adapter names, configs and the active setup.
    #[module(skip)]
    registry: AdapterRegistry,
}

impl MyModel {
    fn new(width: usize, depth: usize, device: &Device) -> Self {
        let blocks = (0..depth)
            .map(|layer| Block {
                up: LinearConfig::new(width, 4 * width).init(device),
                down: LinearConfig::new(4 * width, width).init(device),
                norm: LayerNormConfig::new(width).init(device),
                adapters: ResidualSite::new(SiteLocation {
                    layer,
                    position: SitePosition::Output,
                }),
            })
            .collect();
        Self {
            blocks,
            width,
            registry: AdapterRegistry::default(),
        }
    }

    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for block in &self.blocks {
            let h = block.down.forward(gelu(block.up.forward(x.clone())));
            // instead of `block.norm.forward(h + x)`:
            x = block.adapters.forward(h, x, Some(&block.norm));
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
    fn visit_sites(&self, f: &mut dyn FnMut(&ResidualSite)) {
        self.blocks.iter().for_each(|b| f(&b.adapters));
    }
    fn visit_sites_mut(&mut self, f: &mut dyn FnMut(&mut ResidualSite)) {
        self.blocks.iter_mut().for_each(|b| f(&mut b.adapters));
    }
    fn registry(&self) -> &AdapterRegistry {
        &self.registry
    }
    fn registry_mut(&mut self) -> &mut AdapterRegistry {
        &mut self.registry
    }
}

fn main() -> burn_adapters::Result<()> {
    let device = Device::flex();
    let mut model = MyModel::new(64, 3, &device);
    let x = Tensor::<3>::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
    let base = model.forward(x.clone());

    // Pfeiffer adapters at every block, then a second one for another task.
    model.add_adapter("task_a", AdapterConfig::load("seq_bn[reduction_factor=8]")?)?;
    model.add_adapter(
        "task_b",
        AdapterConfig::load("seq_bn[reduction_factor=4,leave_out=[0]]")?,
    )?;
    model.train_adapter("task_a")?;
    let summary: AdapterSummary = model.adapter_summary();
    println!("{summary}");

    let with_a = model.forward(x.clone());
    model.deactivate_adapters();
    let again = model.forward(x);
    let changed = (with_a - base.clone()).abs().max().into_scalar::<f32>();
    let restored = (again - base).abs().max().into_scalar::<f32>();
    println!("max |Δ| with task_a active: {changed:.4}; after deactivating: {restored}");
    assert_eq!(restored, 0.0);

    let dir = std::env::temp_dir().join("burn-adapters-custom-host");
    model.save_adapter(&dir, "task_a")?;
    println!("saved task_a to {}", dir.display());
    Ok(())
}
