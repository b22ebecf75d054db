//! Switching and loading adapters on the bert-base shape: `set_active_adapters` between two
//! seq_bn adapters, and `load_adapter` of a saved seq_bn adapter (894,528 parameters).
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench switch --
//! ```

mod common;

use std::hint::black_box;

use burn_adapters::models::bert::BertConfig;
use burn_adapters::prelude::*;
use common::bench_device;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn switch(c: &mut Criterion) {
    let device = bench_device();
    let mut group = c.benchmark_group("adapters bert-base");
    for (label, config) in [
        ("tiny", BertConfig::tiny()),
        ("bert-base", BertConfig::bert_base()),
    ] {
        let mut model = config.init(&device).unwrap();
        model.add_adapter("a", BnConfig::seq_bn()).unwrap();
        model.add_adapter("b", BnConfig::seq_bn()).unwrap();
        let setups = [
            AdapterSetup::Name("a".into()),
            AdapterSetup::Name("b".into()),
        ];
        let mut i = 0;
        group.bench_function(format!("set_active_adapters {label}"), |b| {
            b.iter(|| {
                i ^= 1;
                model.set_active_adapters(setups[i].clone()).unwrap();
                black_box(&model);
            })
        });
    }
    let base = BertConfig::bert_base().init(&device).unwrap();
    let mut source = base.clone();
    source.add_adapter("a", BnConfig::seq_bn()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    source.save_adapter(dir.path(), "a").unwrap();
    group.sample_size(20);
    group.bench_function("load_adapter seq_bn bert-base", |b| {
        b.iter_batched(
            || base.clone(),
            |mut model| {
                model.load_adapter(dir.path()).unwrap();
                model
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, switch);
criterion_main!(benches);
