//! Readers racing a writer: while one thread keeps saving two different adapters (same name, same
//! shapes, different configs and weights) into one directory, other threads keep loading it.
//! Every successful load must be one of the two adapters whole, never one's config with the
//! other's weights; failed loads are typed errors.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn_adapters::config::Activation;
use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use common::snapshot::snapshot;
use common::*;

fn with_adapter(spec: &str) -> BertModel {
    let mut model = base_model(&device());
    model
        .add_adapter("x", AdapterConfig::load(spec).unwrap())
        .unwrap();
    model
}

#[test]
fn readers_never_see_a_mixed_adapter() {
    let relu =
        with_adapter("seq_bn[reduction_factor=8,non_linearity=relu,init_weights=mam_adapter]");
    let swish =
        with_adapter("seq_bn[reduction_factor=8,non_linearity=swish,init_weights=mam_adapter]");
    let (relu_params, swish_params) = (snapshot(&relu), snapshot(&swish));
    assert_ne!(relu_params, swish_params, "the two adapters differ");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    relu.save_adapter(&dir, "x").unwrap();

    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(3);
    let (loads, missing, mismatched) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut saves = 0;
            while Instant::now() < deadline {
                let model = if saves % 2 == 0 { &swish } else { &relu };
                model.save_adapter(&dir, "x").unwrap();
                saves += 1;
            }
            done.store(true, Ordering::SeqCst);
            eprintln!("saves: {saves}");
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let base = base_model(&device());
                    let (mut loads, mut missing, mut mismatched) = (0, 0, 0);
                    while !done.load(Ordering::SeqCst) {
                        let mut model = base.clone();
                        match model.load_adapter(&dir) {
                            Ok(_) => {
                                let activation = model
                                    .adapter_config("x")
                                    .unwrap()
                                    .bottleneck()
                                    .unwrap()
                                    .non_linearity;
                                let expected = match activation {
                                    Activation::Relu => &relu_params,
                                    Activation::Silu => &swish_params,
                                    other => panic!("an activation nobody saved: {other}"),
                                };
                                assert!(
                                    &snapshot(&model) == expected,
                                    "the {activation} config was loaded with the other adapter's weights"
                                );
                                loads += 1;
                            }
                            // the moment between removing the old config and writing the new one
                            Err(Error::Io { path, .. }) if path.ends_with("adapter_config.json") => {
                                missing += 1
                            }
                            // files of two saves, still so after the retries
                            Err(Error::ChecksumMismatch { .. }) => mismatched += 1,
                            Err(other) => panic!("a load failed with {other}"),
                        }
                    }
                    (loads, missing, mismatched)
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    eprintln!("loads: {loads}, config missing: {missing}, checksum mismatches: {mismatched}");
    assert!(loads >= 100, "too few loads to mean anything: {loads}");
}
