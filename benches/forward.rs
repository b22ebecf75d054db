//! Forward cost of every adapter method relative to the base model, on the MiniLM-L6 shape
//! (hidden 384, 6 layers, 12 heads, FFN 1536) and the bert-base shape (768, 12, 12, 3072), batch
//! 8 × 128 and 1 × 128, random weights.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench forward -- [filter]
//! ```
//! The device comes from the environment (criterion rejects unknown arguments);
//! `BURN_ADAPTERS_BENCH_SHAPES` limits the shapes (`minilm`, `bert-base`, comma-separated). Every timed call reads a scalar
//! back, so the device has finished its work when the clock stops.

mod common;

use std::hint::black_box;

use common::{Shape, VARIANTS, bench_device, forward_sum, input, shapes, with_variant};
use criterion::{Criterion, criterion_group, criterion_main};

fn forward(c: &mut Criterion) {
    let device = bench_device();
    for shape in shapes() {
        let Shape { name, config } = &shape;
        device.seed(0);
        let base = config.init(&device).unwrap();
        for batch in [8, 1] {
            let input = input(batch, 128, &device);
            let mut group = c.benchmark_group(format!("forward {name} {batch}x128"));
            group.sample_size(10);
            for (label, spec, merged) in VARIANTS {
                let model = with_variant(&base, spec, merged);
                group.bench_function(label, |b| b.iter(|| black_box(forward_sum(&model, &input))));
            }
            group.finish();
        }
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
