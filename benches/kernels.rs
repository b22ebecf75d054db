//! The tensor operations a MiniLM-shaped forward spends its time in, one at a time, on the shapes
//! of batch 8 × 128 tokens: the projections' GEMMs (and the bottleneck's skinny ones), GELU,
//! softmax over the attention scores, LayerNorm, a residual add. `tools/bench_reference.py` times
//! the same operations in PyTorch, so `tools/bench_compare.py` shows which kernels set the
//! Rust/Python ratio of the whole model.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|tch] cargo bench [--features tch] --bench kernels
//! ```

mod common;

use std::hint::black_box;

use burn::nn::LayerNormConfig;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::linear;
use burn::tensor::{Distribution, Tensor};
use burn_adapters::config::Activation;
use common::bench_device;
use criterion::{Criterion, criterion_group, criterion_main};

fn kernels(c: &mut Criterion) {
    let device = bench_device();
    device.seed(0);
    let normal = Distribution::Normal(0.0, 1.0);
    let (rows, hidden, ffn, bottleneck) = (8 * 128, 384, 1536, 24);
    let x = Tensor::<2>::random([rows, hidden], normal, &device);
    let y = Tensor::<2>::random([rows, hidden], normal, &device);
    let inner = Tensor::<2>::random([rows, ffn], normal, &device);
    let z = Tensor::<2>::random([rows, bottleneck], normal, &device);
    let scores = Tensor::<4>::random([8, 12, 128, 128], normal, &device);
    let weight = |d_in, d_out| Tensor::<2>::random([d_in, d_out], normal, &device);
    let (w_square, w_up, w_down) = (
        weight(hidden, hidden),
        weight(hidden, ffn),
        weight(ffn, hidden),
    );
    let (w_bn_down, w_bn_up) = (weight(hidden, bottleneck), weight(bottleneck, hidden));
    let norm = LayerNormConfig::new(hidden).init(&device);
    // Each run reads one element back, so the device has finished when the clock stops.
    let first = |t: Tensor<2>| t.slice([0..1, 0..1]).into_scalar::<f32>();

    let mut group = c.benchmark_group("kernels minilm 8x128");
    group.sample_size(20);
    let mut bench = |label: &str, run: &mut dyn FnMut() -> f32| {
        group.bench_function(label, |b| b.iter(|| black_box(run())));
    };
    bench("gemm 1024x384x384", &mut || {
        first(linear(x.clone(), w_square.clone(), None))
    });
    bench("gemm 1024x384x1536", &mut || {
        first(linear(x.clone(), w_up.clone(), None))
    });
    bench("gemm 1024x1536x384", &mut || {
        first(linear(inner.clone(), w_down.clone(), None))
    });
    bench("gemm 1024x384x24 (bottleneck down)", &mut || {
        first(linear(x.clone(), w_bn_down.clone(), None))
    });
    bench("gemm 1024x24x384 (bottleneck up)", &mut || {
        first(linear(z.clone(), w_bn_up.clone(), None))
    });
    bench("gelu 1024x1536", &mut || first(gelu(inner.clone())));
    // what BERT's FFN runs: on flex inference, the same GELU on the host across threads
    bench("gelu 1024x1536 (burn-adapters)", &mut || {
        first(Activation::Gelu.forward(inner.clone()))
    });
    bench("softmax 8x12x128x128", &mut || {
        first(softmax(scores.clone(), 3).reshape([8 * 12 * 128, 128]))
    });
    bench("layer_norm 1024x384", &mut || {
        first(norm.forward(x.clone()))
    });
    bench("add 1024x384", &mut || first(x.clone() + y.clone()));
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
