//! The model API on the reference hosts: registry, parameter counts, identity init, closed
//! forms, training isolation, and the TransformerEncoder wrapper.

mod common;

use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, activation};
use burn_adapters::models::bert::{BertConfig, BertInput};
use burn_adapters::models::encoder::{
    AdapterTransformerEncoder, TransformerEncoderInput as AdapterInput,
};
use burn_adapters::prelude::*;
use burn_adapters::sites::{SharedParameters, SitePosition};
use common::one_site::OneSite;
use common::snapshot::snapshot;
use common::*;

fn tiny_input(device: &Device) -> BertInput {
    let ids = Tensor::<2, Int>::from_ints([[2, 45, 17, 88, 5, 3], [2, 71, 9, 3, 0, 0]], device);
    let mask = Tensor::<2, Int>::from_ints([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], device);
    BertInput::new(ids, mask)
}

#[test]
fn parameter_counts_on_bert_base_equal_the_reference() {
    // Numbers printed by AdapterHub's adapter_summary() on a bert-base-shaped BertModel.
    let device = device();
    let mut model = BertConfig::bert_base().init(&device).unwrap();
    model.add_adapter("seq_bn", BnConfig::seq_bn()).unwrap();
    model
        .add_adapter("double_seq_bn", BnConfig::double_seq_bn())
        .unwrap();
    model.add_adapter("par_bn", BnConfig::par_bn()).unwrap();
    let summary = model.adapter_summary();
    let counts: Vec<usize> = summary.adapters.iter().map(|r| r.num_params).collect();
    assert_eq!(counts, [894_528, 1_789_056, 7_091_712]);
    assert_eq!(summary.base_params, 109_482_240);
    // bottleneck 768/16 = 48: per layer 768·48 + 48 + 48·768 + 768 = 74,544
    assert_eq!(894_528, 12 * (768 * 48 + 48 + 48 * 768 + 768));
    let table = summary.to_string();
    assert!(
        table.contains(
            "seq_bn                   bottleneck          894,528       0.817       0       1"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "Full model                               109,482,240     100.000               1"
        ),
        "{table}"
    );
}

#[test]
fn identity_initialisation_leaves_the_model_unchanged() {
    let device = device();
    let base = BertConfig::tiny().init(&device).unwrap();
    let want = values(base.forward(tiny_input(&device)).last_hidden_state);
    for spec in [
        "seq_bn[init_weights=mam_adapter]",
        "double_seq_bn[init_weights=mam_adapter]",
        "par_bn",
        "double_seq_bn[init_weights=mam_adapter,ln_after=False,use_gating=True]",
    ] {
        let mut model = base.clone();
        model
            .add_adapter("a", AdapterConfig::load(spec).unwrap())
            .unwrap();
        model.set_active_adapters("a").unwrap();
        let got = values(model.forward(tiny_input(&device)).last_hidden_state);
        assert_eq!(
            got, want,
            "{spec}: a zero up-projection must be an exact identity"
        );
    }
    // and a bert-initialised adapter is not
    let mut model = base.clone();
    model.add_adapter("a", BnConfig::seq_bn()).unwrap();
    model.set_active_adapters("a").unwrap();
    assert_ne!(
        values(model.forward(tiny_input(&device)).last_hidden_state),
        want
    );
}

/// Random `[2, 3, 8]` tensors and a LayerNorm with non-trivial affine parameters.
fn site_inputs(device: &Device) -> (Tensor<3>, Tensor<3>, LayerNorm) {
    device.seed(7);
    let h = Tensor::<3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), device);
    let r = Tensor::<3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), device);
    let mut ln = LayerNormConfig::new(8).init(device);
    ln.gamma = ln
        .gamma
        .map(|g| g + Tensor::random([8], Distribution::Normal(0.0, 0.3), device));
    ln.beta = ln
        .beta
        .map(|beta| beta.map(|b| b + Tensor::random([8], Distribution::Normal(0.0, 0.3), device)));
    (h, r, ln)
}

/// A host with one site at `position` holding adapter `a` of `config`, active.
fn site_with(config: &str, position: SitePosition, device: &Device) -> OneSite {
    OneSite::with(8, position, &[("a", config)], "a", device)
}

/// `s · (act(x·Wd + bd)·Wu + bu)` from the adapter's own weights, with plain tensor algebra.
fn f(host: &OneSite, x: Tensor<3>, act: fn(Tensor<3>) -> Tensor<3>, s: f64) -> Tensor<3> {
    let a = host.site.adapters().get("a").unwrap();
    let (wd, bd) = a.down.weight_and_bias(None);
    let (wu, bu) = a.up.weight_and_bias(None);
    let down = x.matmul(wd.unsqueeze()) + bd.unwrap().unsqueeze();
    let up = act(down).matmul(wu.unsqueeze()) + bu.unwrap().unsqueeze();
    up.mul_scalar(s)
}

fn assert_close(got: Tensor<3>, want: Tensor<3>, what: &str) {
    let delta = max_abs_diff_tensors(got, want);
    assert!(delta <= 1e-6, "{what}: max |Δ| = {delta:e}");
}

#[test]
fn pfeiffer_houlsby_and_parallel_closed_forms() {
    let device = device();
    let (h, r, ln) = site_inputs(&device);
    // Pfeiffer: y = LN(f(LN(h + r)) + h + r)
    let site = site_with("seq_bn[reduction_factor=2]", SitePosition::Output, &device);
    let want = ln.forward(
        f(
            &site,
            ln.forward(h.clone() + r.clone()),
            activation::relu,
            1.0,
        ) + h.clone()
            + r.clone(),
    );
    assert_close(
        site.site
            .forward(h.clone(), r.clone(), Some(&ln), &SharedParameters::new()),
        want,
        "pfeiffer",
    );
    // Houlsby: y = LN(f(h) + h + r), at both sites
    for position in [SitePosition::Attention, SitePosition::Output] {
        let site = site_with("double_seq_bn[reduction_factor=2]", position, &device);
        let want = ln.forward(f(&site, h.clone(), activation::silu, 1.0) + h.clone() + r.clone());
        assert_close(
            site.site
                .forward(h.clone(), r.clone(), Some(&ln), &SharedParameters::new()),
            want,
            "houlsby",
        );
    }
    // Parallel: y = LN(h + r + s·f(r)), made non-trivial by a bert init instead of zeros
    let site = site_with(
        "par_bn[reduction_factor=2,init_weights=bert]",
        SitePosition::Output,
        &device,
    );
    let want = ln.forward(h.clone() + r.clone() + f(&site, r.clone(), activation::relu, 4.0));
    assert_close(
        site.site
            .forward(h.clone(), r.clone(), Some(&ln), &SharedParameters::new()),
        want,
        "parallel",
    );
    // Pre-norm hosts (no LayerNorm at the site): Houlsby becomes f(h) + h + r
    let site = site_with(
        "double_seq_bn[reduction_factor=2]",
        SitePosition::Output,
        &device,
    );
    let want = f(&site, h.clone(), activation::silu, 1.0) + h.clone() + r.clone();
    assert_close(
        site.site.forward(h, r, None, &SharedParameters::new()),
        want,
        "houlsby without LayerNorm",
    );
}

#[test]
fn train_adapter_changes_only_that_adapter() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = BertConfig::tiny().init(&device).unwrap();
    model.add_adapter("a", BnConfig::double_seq_bn()).unwrap();
    model.add_adapter("b", BnConfig::seq_bn()).unwrap();
    model.train_adapter("a").unwrap();
    let before = snapshot(&model);

    let mut optim = AdamConfig::new().init();
    for _ in 0..3 {
        let out = model.forward(tiny_input(&device)).last_hidden_state;
        let loss = out.powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = snapshot(&model);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let (mut changed, mut frozen) = (0, 0);
    for (path, old) in &before {
        let in_a = path.contains(".adapters.a.");
        if in_a {
            changed += usize::from(old != &after[path]);
        } else {
            assert_eq!(old, &after[path], "{path} changed although only `a` trains");
            frozen += 1;
        }
    }
    assert!(
        changed >= 8,
        "the adapter's parameters must change ({changed} did)"
    );
    assert!(frozen > 30, "{frozen}");
    let summary = model.adapter_summary();
    assert!(
        summary.adapters[0].trainable && !summary.adapters[1].trainable && !summary.base_trainable
    );
}

/// Clones of a model share the lazy initialisers of parameters not yet materialised; setting
/// trainability on one clone must not reach the others.
#[test]
fn trainability_stays_with_the_clone_it_was_set_on() {
    let device = Device::flex().autodiff();
    device.seed(4);
    let base = BertConfig::tiny().init(&device).unwrap(); // parameters still lazy
    let mut adapted = base.clone();
    adapted.add_adapter("a", BnConfig::seq_bn()).unwrap();
    adapted.train_adapter("a").unwrap();
    let mut full = base.clone();
    full.freeze_model(false);

    let before = snapshot(&adapted);
    let mut optim = AdamConfig::new().init();
    for _ in 0..2 {
        let out = adapted.forward(tiny_input(&device)).last_hidden_state;
        let grads = GradientsParams::from_grads(out.powi_scalar(2).mean().backward(), &adapted);
        adapted = optim.step(1e-2, adapted, grads);
    }
    let after = snapshot(&adapted);
    for (path, old) in &before {
        if !path.contains(".adapters.a.") {
            assert_eq!(old, &after[path], "{path} changed although only `a` trains");
        }
    }
    assert!(!adapted.adapter_summary().base_trainable);
    assert!(full.adapter_summary().base_trainable);
}

#[test]
fn registry_behaviour_and_failed_calls_leave_the_model_unchanged() {
    let device = device();
    let mut model = BertConfig::tiny().init(&device).unwrap();
    model.add_adapter("a", BnConfig::seq_bn()).unwrap();
    assert!(
        matches!(model.add_adapter("a", BnConfig::seq_bn()), Err(Error::DuplicateAdapter(n)) if n == "a")
    );
    model
        .add_adapter_with(
            "a",
            BnConfig::double_seq_bn(),
            AddAdapterOptions {
                overwrite_ok: true,
                set_active: true,
            },
        )
        .unwrap();
    assert_eq!(
        model.active_adapters(),
        Some(&AdapterSetup::Name("a".into()))
    );
    assert_eq!(
        model.adapter_summary().adapters[0].num_params,
        2 * 2 * (32 * 2 + 2 + 2 * 32 + 32)
    );

    let snap = snapshot(&model);
    for bad in ["", "a.b", "x y", "a[0]", "p|q"] {
        assert!(
            matches!(
                model.add_adapter(bad, BnConfig::seq_bn()),
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let err = model
        .add_adapter("c", AdapterConfig::load("seq_bn[leave_out=[5]]").unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "leave_out"),
        "{err}"
    );
    let err = model
        .add_adapter(
            "c",
            AdapterConfig::load(r#"seq_bn[reduction_factor={"0": 4}]"#).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "reduction_factor"),
        "{err}"
    );
    let err = model
        .add_adapter(
            "c",
            AdapterConfig::load("seq_bn[reduction_factor=1e-300]").unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "reduction_factor"),
        "{err}"
    );
    assert!(
        matches!(model.set_active_adapters("nope"), Err(Error::UnknownAdapter(n)) if n == "nope")
    );
    assert!(matches!(
        model.set_active_adapters(AdapterSetup::stack(["a", "zz"])),
        Err(Error::UnknownAdapter(_))
    ));
    assert!(matches!(
        model.delete_adapter("nope"),
        Err(Error::UnknownAdapter(_))
    ));
    assert_eq!(snapshot(&model), snap);
    assert_eq!(model.adapter_names(), ["a"]);
    assert_eq!(
        model.active_adapters(),
        Some(&AdapterSetup::Name("a".into()))
    );

    model.delete_adapter("a").unwrap();
    assert!(!model.has_adapter("a"));
    assert_eq!(model.active_adapters(), None);
    assert_eq!(model.adapter_summary().adapters.len(), 0);
    let base = BertConfig::tiny().init(&device).unwrap();
    assert_eq!(snapshot(&model).len(), snapshot(&base).len());
}

#[test]
fn leave_out_and_per_layer_reduction_factor() {
    let device = device();
    let mut model = BertConfig::tiny().init(&device).unwrap();
    model
        .add_adapter(
            "a",
            AdapterConfig::load(
                r#"double_seq_bn[reduction_factor={"1": 4, "default": 16}, leave_out=[0]]"#,
            )
            .unwrap(),
        )
        .unwrap();
    let sizes: Vec<usize> = model
        .encoder
        .layer
        .iter()
        .flat_map(|l| [&l.attention.output.adapters, &l.output.adapters])
        .map(|site| site.adapters().get("a").map_or(0, |a| a.bottleneck_size()))
        .collect();
    assert_eq!(sizes, [0, 0, 8, 8]);
}

#[test]
fn stack_applies_adapters_in_sequence() {
    let device = device();
    let (h, r, ln) = site_inputs(&device);
    let host = OneSite::with(
        8,
        SitePosition::Output,
        &[
            ("a", "double_seq_bn[reduction_factor=2]"),
            ("b", "double_seq_bn[reduction_factor=4,non_linearity=relu]"),
        ],
        "Stack[a, b]",
        &device,
    );
    let site = &host.site;
    // Houlsby stack: u = h + f_a(h); v = u + f_b(u); y = LN(v + r)
    let fa = |x: Tensor<3>| {
        let m = site.adapters().get("a").unwrap();
        m.up.forward(activation::silu(m.down.forward(x, None)), None)
    };
    let fb = |x: Tensor<3>| {
        let m = site.adapters().get("b").unwrap();
        m.up.forward(activation::relu(m.down.forward(x, None)), None)
    };
    let u = fa(h.clone()) + h.clone();
    let v = fb(u.clone()) + u;
    assert_close(
        site.forward(h, r.clone(), Some(&ln), &SharedParameters::new()),
        ln.forward(v + r),
        "stack",
    );
}

#[test]
fn transformer_encoder_wrapper_equals_burn_forward() {
    let device = device();
    device.seed(11);
    for norm_first in [false, true] {
        let encoder = TransformerEncoderConfig::new(32, 64, 4, 2)
            .with_norm_first(norm_first)
            .init(&device);
        let x = Tensor::<3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
        let pad =
            Tensor::<2, Int>::from_ints([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], &device).equal_elem(1);
        let want =
            values(encoder.forward(TransformerEncoderInput::new(x.clone()).mask_pad(pad.clone())));
        let paths = snapshot(&encoder);

        let mut model = AdapterTransformerEncoder::from_encoder(encoder.clone());
        assert_eq!(
            snapshot(&model),
            paths,
            "the wrapper keeps burn's parameter paths and values"
        );
        assert_eq!(
            values(model.forward(AdapterInput::new(x.clone()).mask_pad(pad.clone()))),
            want,
            "norm_first = {norm_first}"
        );

        model
            .add_adapter(
                "id",
                AdapterConfig::load("double_seq_bn[init_weights=mam_adapter]").unwrap(),
            )
            .unwrap();
        model.add_adapter("b", BnConfig::double_seq_bn()).unwrap();
        assert_eq!(
            values(model.forward(AdapterInput::new(x.clone()).mask_pad(pad.clone()))),
            want,
            "inactive adapters change nothing"
        );
        model.set_active_adapters("id").unwrap();
        assert_eq!(
            values(model.forward(AdapterInput::new(x.clone()).mask_pad(pad.clone()))),
            want,
            "identity adapter"
        );
        model.set_active_adapters("b").unwrap();
        assert_ne!(
            values(model.forward(AdapterInput::new(x.clone()).mask_pad(pad.clone()))),
            want
        );

        let back = model.into_encoder();
        assert_eq!(snapshot(&back), paths);
    }
}

#[test]
fn seeded_initialisation_is_reproducible() {
    let device = device();
    let config = AdapterConfig::load("seq_bn[init_weights_seed=42]").unwrap();
    let mut a = BertConfig::tiny().init(&device).unwrap();
    let mut b = a.clone();
    a.add_adapter("x", config.clone()).unwrap();
    b.add_adapter("x", config).unwrap();
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    assert_eq!(sa, sb);
    // every site starts from the same weights (the reference re-seeds per module)
    let l0 = &sa["encoder.layer.0.output.adapters.x.down.Dense.weight"];
    let l1 = &sa["encoder.layer.1.output.adapters.x.down.Dense.weight"];
    assert_eq!(l0, l1);
}
