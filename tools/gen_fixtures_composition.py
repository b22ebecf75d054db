#!/usr/bin/env python3
"""Adapter-composition golden fixtures (AdapterHub `adapters` 1.3.0), called by gen_fixtures.py.

    python tools/gen_fixtures_composition.py [OUT_DIR]   # needs OUT_DIR/base and OUT_DIR/inputs.safetensors

Adapters shared by all cases (created once, perturbed, saved; each case dir holds copies of the ones it uses):
    a, b, c    seq_bn[reduction_factor=8]   every parameter + 0.1 * N(0,1)
    la, lb     lora[r=4,alpha=8]            every parameter + 0.3 * N(0,1)
Fusion layers (fuse_*, nested_stack_fuse and fuse_nested_stack cases) are created per case under the case's Fuse
block's name (AdapterHub's `Fuse.name`: "a,b", or "b,c" for Fuse(Stack("a", "b"), "c")) and get + 0.3 * N(0,1).

Layout:
    OUT/composition/cases.json                 [{"name", "setup", "files", ...same keys as setup.json}, ...]
    OUT/composition/<case>/setup.json          {"setup": Python text form, "setup_repr": the reference's repr
                                                (e.g. "Stack[a, b]"; drops splits/weights/batch_sizes),
                                                "setup_dict": AdapterCompositionBlock.to_dict()
                                                (or the adapter name), "adapters": [subdirs to load_adapter],
                                                "fusion": subdir or null, "fusion_config": "dynamic"|"static"|null,
                                                "output_shape", "reference_ok", "notes", optional "row_checks",
                                                optional "average_adapter"}
    OUT/composition/<case>/<adapter>/          adapter_config.json + adapter.safetensors (save_adapter, safetensors)
    OUT/composition/<case>/fusion/             adapter_fusion_config.json + model_adapter_fusion.safetensors
    OUT/composition/<case>/expected.safetensors  last_hidden_state f32 [rows,7,32] with the setup active (eval)

Self-checks: the setups' per-site math is re-implemented independently (forward hooks on BertOutput for the
bottleneck cases, on the LoRA-wrapped Linears for the LoRA cases) and must match; multi-row outputs are compared
with single-setup runs (recorded as row_checks); every case is rebuilt from its own directory in a fresh model
(load_adapter / load_adapter_fusion) and must reproduce expected (max |d| < 1e-6).
"""

import json
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F

import gen_fixtures as G
import fixture_common as C
from adapters.composition import Average, BatchSplit, Fuse, Parallel, Split, Stack

SEED = 3456
BN_NOISE = 0.1
LORA_NOISE = 0.3
FUSION_NOISE = 0.3
BN_CONFIG = "seq_bn[reduction_factor=8]"
LORA_CONFIG = "lora[r=4,alpha=8]"
POOL = [("a", BN_CONFIG), ("b", BN_CONFIG), ("c", BN_CONFIG), ("la", LORA_CONFIG), ("lb", LORA_CONFIG)]

# name, setup (text form, evaluated with the composition classes), fusion config or None, notes
CASES = [
    ("single_a", '"a"', None, "plain single adapter a (for comparing rows of the multi-row cases)"),
    ("single_b", '"b"', None, "plain single adapter b"),
    ("single_c", '"c"', None, "plain single adapter c"),
    ("single_la", '"la"', None, "plain single LoRA la"),
    ("single_lb", '"lb"', None, "plain single LoRA lb"),
    ("stack_bn", 'Stack("a", "b")', None,
     "per site: o_a = f_a(LN(h+r)) + h; o_b = f_b(LN(o_a+r)) + o_a; y = LN(o_b + r)"),
    ("stack_lora", 'Stack("la", "lb")', None,
     "per wrapped Linear: d1 = x A1^T B1^T s1; d2 = d1 A2^T B2^T s2 (the first delta is the INPUT of the second); "
     "y = W x + b + d2"),
    ("stack_lora_bn", 'Stack("la", "a")', None, "LoRA la on q,v and bottleneck a at the FFN output"),
    ("fuse_dynamic", 'Fuse("a", "b")', "dynamic",
     "z = LN(h+r); u_i = f_i(z); p = softmax_i((Wq z + bq) . (Wk u_i + bk)); o = sum_i p_i Wv u_i + h; y = LN(o+r)"),
    ("fuse_static", 'Fuse("a", "b")', "static",
     "as fuse_dynamic without value matrix: o = sum_i p_i u_i + h"),
    ("split_bn", 'Split("a", "b", splits=[3, 4])', None, "sequence positions 0..2 -> a, 3..6 -> b"),
    ("batchsplit_bn", 'BatchSplit("a", "b", batch_sizes=[1, 1])', None, "row 0 -> a, row 1 -> b"),
    ("batchsplit_lora", 'BatchSplit("la", "lb", batch_sizes=[1, 1])', None, "row 0 -> la, row 1 -> lb"),
    ("parallel_bn", 'Parallel("a", "b")', None, "output batch doubled: rows 0..1 -> a, rows 2..3 -> b"),
    ("parallel_lora", 'Parallel("la", "lb")', None, ""),
    ("average_bn", 'Average("a", "b", weights=[0.3, 0.7])', None,
     "weights normalised to sum 1, then o = (1/N) sum_i w_i (f_i(LN(h+r)) + h) (N=2: residual h is halved); "
     "y = LN(o + r)"),
    ("average_lora", 'Average("la", "lb", weights=[0.3, 0.7])', None,
     "per wrapped Linear: y = W x + b + (1/N) sum_i w_i x Ai^T Bi^T si (weights normalised to sum 1, N=2)"),
    ("nested_stack_parallel", 'Stack("c", Parallel("a", "b"))', None, "rows 0..1 -> Stack(c,a), rows 2..3 -> Stack(c,b)"),
    ("nested_stack_fuse", 'Stack("c", Fuse("a", "b"))', "dynamic",
     "o_c = f_c(LN(h+r)) + h, then Fuse on hidden o_c: z = LN(o_c+r), residual o_c"),
    ("nested_batchsplit_stack", 'BatchSplit(Stack("c", "a"), "b", batch_sizes=[1, 1])', None,
     "reference quirk: BatchSplit first applies c's pre_forward to all rows (hidden LN(h+r), residual h), then the "
     "child Stack applies c's pre_forward again to row 0, so row 0 != Stack(c,a) alone (see row_checks)"),
    ("batchsplit_bn_lora", 'BatchSplit("a", "la", batch_sizes=[1, 1])', None, "row 0 -> a, row 1 -> la"),
    ("parallel_lora_bn", 'Parallel("la", "a")', None, "rows 0..1 -> la, rows 2..3 -> a"),
    ("fuse_nested_stack", 'Fuse(Stack("a", "b"), "c")', "dynamic",
     "the fusion layer is Fuse.name = \"b,c\" (each child's last adapter; add_adapter_fusion cannot take the "
     "nested block itself). z = LN(h+r) (c's pre_forward), residual h; the Stack child: o_a = f_a(LN(z+r)) + z, "
     "u_b = f_b(LN(o_a+r)); u_c = f_c(z); o = fusion(z; u_b, u_c) + h; y = LN(o+r)"),
]

# average_adapter cases: name -> (new adapter name, kwargs of model.average_adapter)
AVERAGE_CASES = [
    ("average_adapter_bn", "avg_bn", dict(adapter_list=["a", "b"], weights=[0.3, 0.7], combine_strategy="linear")),
    ("average_adapter_lora_linear", "avg_lora",
     dict(adapter_list=["la", "lb"], weights=[0.3, 0.7], combine_strategy="linear")),
    ("average_adapter_lora_svd", "avg_lora_svd",
     dict(adapter_list=["la", "lb"], weights=[0.3, 0.7], combine_strategy="lora_delta_w_svd", svd_rank=4)),
    ("average_adapter_lora_negate_b", "avg_lora_negb",
     dict(adapter_list=["la", "lb"], weights=[0.6, -0.4], combine_strategy="lora_linear_only_negate_b",
          normalize_weights=False)),
]

NS = {"Stack": Stack, "Fuse": Fuse, "Split": Split, "BatchSplit": BatchSplit, "Parallel": Parallel, "Average": Average}


def parse_setup(text):
    return eval(text, {"__builtins__": {}}, dict(NS))


def flatten(setup):
    if isinstance(setup, str):
        return [setup]
    out = []
    for ch in setup:
        for n in flatten(ch):
            if n not in out:
                out.append(n)
    return out


def has_fuse(setup):
    return not isinstance(setup, str) and (isinstance(setup, Fuse) or any(has_fuse(c) for c in setup))


def fuse_block(setup):
    """The outermost Fuse block of a setup."""
    if isinstance(setup, Fuse):
        return setup
    for child in [] if isinstance(setup, str) else setup:
        found = fuse_block(child)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# independent per-site re-implementation (bottleneck cases) -- checked with hooks on BertOutput
# ---------------------------------------------------------------------------------------------


def f_adapter(ad, z):
    """seq_bn body: Up(relu(Down(z))) * scaling (1.0); eval: no dropout."""
    w_d, b_d = ad.adapter_down[0].weight, ad.adapter_down[0].bias
    return F.linear(torch.relu(F.linear(z, w_d, b_d)), ad.adapter_up.weight, ad.adapter_up.bias) * ad.scaling


def fusion_formula(fu, cfg, z, h, ups):
    """BertFusion in eval: query = z (after the LN), keys/values = the adapters' up outputs, residual h."""
    U = torch.stack(ups, dim=2)  # [B,S,N,H]
    q = F.linear(z, fu.query.weight, fu.query.bias)
    k = F.linear(U, fu.key.weight, fu.key.bias)
    v = F.linear(U, fu.value.weight) if cfg == "dynamic" else U
    scores = torch.einsum("bsh,bsnh->bsn", q, k)
    p = torch.softmax(scores, dim=-1)  # temperature T = 1
    return torch.einsum("bsn,bsnh->bsh", p, v) + h


def bn_site(case, mod, x, r, fusion_cfg):
    A = mod.adapters
    LN = mod.LayerNorm
    h = F.linear(x, mod.dense.weight, mod.dense.bias)

    def single(n, h, r):
        return LN(f_adapter(A[n], LN(h + r)) + h + r)

    if case in ("single_a", "single_b", "single_c"):
        return single(case[-1], h, r)
    if case == "stack_lora_bn":
        return single("a", h, r)
    if case == "stack_bn":
        o_a = f_adapter(A["a"], LN(h + r)) + h
        o_b = f_adapter(A["b"], LN(o_a + r)) + o_a
        return LN(o_b + r)
    if case == "fuse_nested_stack":
        z = LN(h + r)
        o_a = f_adapter(A["a"], LN(z + r)) + z
        u_b = f_adapter(A["b"], LN(o_a + r))
        o = fusion_formula(mod.adapter_fusion_layer["b,c"], fusion_cfg, z, h, [u_b, f_adapter(A["c"], z)])
        return LN(o + r)
    if case.startswith("fuse_"):
        z = LN(h + r)
        o = fusion_formula(mod.adapter_fusion_layer["a,b"], fusion_cfg, z, h, [f_adapter(A["a"], z), f_adapter(A["b"], z)])
        return LN(o + r)
    if case == "nested_stack_fuse":
        o_c = f_adapter(A["c"], LN(h + r)) + h
        z = LN(o_c + r)
        o = fusion_formula(mod.adapter_fusion_layer["a,b"], fusion_cfg, z, o_c, [f_adapter(A["a"], z), f_adapter(A["b"], z)])
        return LN(o + r)
    if case == "split_bn":
        z = LN(h + r)
        o = torch.cat([f_adapter(A["a"], z[:, :3]), f_adapter(A["b"], z[:, 3:])], dim=1) + h
        return LN(o + r)
    if case == "batchsplit_bn":
        return torch.cat([single("a", h[:1], r[:1]), single("b", h[1:], r[1:])], dim=0)
    if case == "parallel_bn":
        if h.shape[0] == 2:  # first adapter site: the batch is repeated here
            h, r = h.repeat(2, 1, 1), r.repeat(2, 1, 1)
        return torch.cat([single("a", h[:2], r[:2]), single("b", h[2:], r[2:])], dim=0)
    if case == "average_bn":
        z = LN(h + r)
        w = (0.3, 0.7)
        # reference: mean over the N=2 children of w_i * (f_i(z) + h)  ->  (1/N) sum w_i o_i  (residual halved)
        o = (w[0] * (f_adapter(A["a"], z) + h) + w[1] * (f_adapter(A["b"], z) + h)) / 2
        return LN(o + r)
    if case == "nested_stack_parallel":
        def stack2(n, h, r):
            o_c = f_adapter(A["c"], LN(h + r)) + h
            return LN(f_adapter(A[n], LN(o_c + r)) + o_c + r)
        if h.shape[0] == 2:
            h, r = h.repeat(2, 1, 1), r.repeat(2, 1, 1)
        return torch.cat([stack2("a", h[:2], r[:2]), stack2("b", h[2:], r[2:])], dim=0)
    if case == "nested_batchsplit_stack":
        # reference: BatchSplit runs the FIRST adapter's pre_forward (c's: LN(h+r), residual h) on all rows, then
        # the child Stack("c","a") runs c's pre_forward AGAIN on row 0 (hidden = LN(h+r) -> LN(LN(h+r)+r)).
        z0 = LN(h + r)
        h0, r0 = z0[:1], r[:1]  # row 0: the stack sees hidden = z0, residual input r
        o_c = f_adapter(A["c"], LN(h0 + r0)) + h0
        o_a = f_adapter(A["a"], LN(o_c + r0)) + o_c
        row0 = LN(o_a + r0)
        row1 = LN(f_adapter(A["b"], z0[1:]) + h[1:] + r[1:])
        return torch.cat([row0, row1], dim=0)
    return None


def check_bn_sites(model, case, inputs, fusion_cfg):
    mods = [(n, m) for n, m in model.named_modules() if n.endswith(".output") and n.count(".") == 3
            and hasattr(m, "adapters")]
    recs = {}

    def hook(name):
        def fn(m, args, out):
            recs.setdefault(name, []).append((args[0].detach().clone(), args[1].detach().clone(), out.detach().clone()))
        return fn

    hs = [m.register_forward_hook(hook(n)) for n, m in mods]
    try:
        G.run(model, inputs)
    finally:
        for h in hs:
            h.remove()
    worst, n = 0.0, 0
    by_name = dict(mods)
    with torch.no_grad():
        for name, rr in recs.items():
            for x, r, y in rr:
                want = bn_site(case, by_name[name], x, r, fusion_cfg)
                if want is None:
                    return None
                assert want.shape == y.shape, (case, name, want.shape, y.shape)
                worst = max(worst, (want - y).abs().max().item())
                n += 1
    assert n == 2 and worst < C.FORMULA_TOL, (case, n, worst)
    return worst


# LoRA cases: expected output of every LoRA-wrapped Linear
def lora_site_fn(case):
    def delta(mod, n, x):
        return C.lora_delta(mod.loras[n], x, "lora", r=4, alpha=8)

    def fn(mod_name, mod, x, y0):
        if not mod.loras or mod_name.split(".", 3)[3] not in ("attention.self.query", "attention.self.value"):
            return y0
        if case in ("single_la", "single_lb"):
            return y0 + delta(mod, case[-2:], x)
        if case == "stack_lora_bn":
            return y0 + delta(mod, "la", x)
        if case == "stack_lora":
            # Stack passes the first LoRA's (scaled) delta as INPUT to the second: h2 = (x A1ᵀB1ᵀ s1) A2ᵀB2ᵀ s2
            return y0 + delta(mod, "lb", delta(mod, "la", x))
        if case == "average_lora":
            return y0 + (0.3 * delta(mod, "la", x) + 0.7 * delta(mod, "lb", x)) / 2
        if case == "batchsplit_lora":
            return torch.cat([y0[:1] + delta(mod, "la", x[:1]), y0[1:] + delta(mod, "lb", x[1:])], dim=0)
        raise KeyError(case)

    return fn


LORA_SITE_CASES = ("single_la", "single_lb", "stack_lora", "stack_lora_bn", "average_lora", "batchsplit_lora")

# multi-row cases: (rows of this case, reference case, rows of the reference case)
ROW_CHECKS = {
    "batchsplit_bn": [((0, 1), "single_a", (0, 1)), ((1, 2), "single_b", (1, 2))],
    "batchsplit_lora": [((0, 1), "single_la", (0, 1)), ((1, 2), "single_lb", (1, 2))],
    "parallel_bn": [((0, 2), "single_a", (0, 2)), ((2, 4), "single_b", (0, 2))],
    "nested_stack_parallel": [((0, 2), 'Stack("c", "a")', (0, 2)), ((2, 4), 'Stack("c", "b")', (0, 2))],
    "nested_batchsplit_stack": [((0, 1), 'Stack("c", "a")', (0, 1)), ((1, 2), "single_b", (1, 2))],
}


# ---------------------------------------------------------------------------------------------


def build_pool(base_dir, pool_dir):
    model = C.fresh_model(base_dir)
    for i, (n, cfg) in enumerate(POOL):
        torch.manual_seed(SEED + i)
        model.add_adapter(n, config=cfg)
        C.perturb(C.method_params(model, n), LORA_NOISE if cfg == LORA_CONFIG else BN_NOISE)
        model.save_adapter(os.path.join(pool_dir, n), n, with_head=False, use_safetensors=True)
    return model


def case_model(base_dir, pool_dir, names):
    m = C.fresh_model(base_dir)
    for n in names:
        C.load_adapter_checked(m, os.path.join(pool_dir, n), n)
    return m


def run_setup(model, setup, inputs):
    model.set_active_adapters(setup)
    return G.run(model, inputs).last_hidden_state


def build_case(idx, name, text, fusion_cfg, notes, base_dir, pool_dir, out_dir, inputs, base_out, singles):
    case_dir = os.path.join(out_dir, "composition", name)
    C.fresh_dir(case_dir)
    setup = parse_setup(text)
    names = flatten(setup)
    model = case_model(base_dir, pool_dir, names)
    fusion_name = fuse_block(setup).name if fusion_cfg else None
    if fusion_cfg:
        model.add_adapter_fusion(fusion_name, fusion_cfg)
        torch.manual_seed(SEED + 100 + idx)
        fparams = C.fusion_params(model, fusion_name)
        assert fparams
        C.perturb(fparams, FUSION_NOISE)
    info = {
        "setup": text.strip('"') if text.startswith('"') else text,
        "setup_repr": str(setup),
        "setup_dict": setup if isinstance(setup, str) else setup.to_dict(),
        "adapters": names,
        "fusion": "fusion" if fusion_cfg else None,
        "fusion_config": fusion_cfg,
        "reference_ok": True,
        "notes": notes,
    }
    try:
        out = run_setup(model, setup, inputs)
    except Exception as e:  # reference crash: record it, synthesize "each branch = its adapter alone" if possible
        info["reference_ok"] = False
        info["reference_error"] = "{}: {}".format(type(e).__name__, e)
        if isinstance(setup, Parallel) and all(isinstance(c, str) for c in setup):
            out = torch.cat([singles[c] for c in setup], dim=0)
            info["notes"] = (notes + "; " if notes else "") + (
                "the reference crashes (reference_error); expected.safetensors is SYNTHESIZED as the "
                "concatenation along the batch of the single-adapter runs of each child, in order "
                "(= 'every branch equals running its adapter alone')")
            info["synthesized"] = True
        elif isinstance(setup, BatchSplit) and all(isinstance(c, str) for c in setup):
            bounds = [sum(setup.batch_sizes[:i]) for i in range(len(setup.batch_sizes) + 1)]
            out = torch.cat([singles[c][bounds[i]:bounds[i + 1]] for i, c in enumerate(setup)], dim=0)
            info["notes"] = (notes + "; " if notes else "") + (
                "the reference crashes (reference_error); expected.safetensors is SYNTHESIZED: the rows of each "
                "child are taken from the single-adapter run of that child (= 'every row equals running its "
                "adapter alone')")
            info["synthesized"] = True
        else:
            shutil.rmtree(case_dir)
            print("{:<30} SKIPPED: {}".format(name, info["reference_error"]))
            return None
    if not info.get("synthesized"):
        d_base = G.max_abs(out[: base_out.shape[0]], base_out)
        assert d_base > 1e-2, (name, d_base)
        info["max_abs_diff_vs_base"] = d_base
    info["output_shape"] = list(out.shape)

    for n in names:
        model.save_adapter(os.path.join(case_dir, n), n, with_head=False, use_safetensors=True)
    if fusion_cfg:
        model.save_adapter_fusion(os.path.join(case_dir, "fusion"), fusion_name, use_safetensors=True)
        info["fusion_files"] = sorted(os.listdir(os.path.join(case_dir, "fusion")))
        info["fusion_tensors"] = C.manifest(os.path.join(case_dir, "fusion", "model_adapter_fusion.safetensors"))
    C.save_expected(os.path.join(case_dir, "expected.safetensors"), out)

    # independent per-site math
    formula = None
    if not info.get("synthesized"):
        model.set_active_adapters(setup)
        if name in LORA_SITE_CASES:
            formula, _ = C.check_lora_modules(model, inputs, lora_site_fn(name))
        bn = check_bn_sites(model, name, inputs, fusion_cfg) if not name.endswith("lora") and name not in (
            "single_la", "single_lb") else None
        formula = bn if formula is None else max(formula, bn or 0.0)
    info["formula_max_abs_diff"] = formula

    # rows vs single-setup runs
    if name in ROW_CHECKS:
        checks = []
        for (r0, r1), ref, (s0, s1) in ROW_CHECKS[name]:
            ref_out = singles[ref] if ref in singles else run_setup(model, parse_setup(ref), inputs)
            d = G.max_abs(out[r0:r1], ref_out[s0:s1])
            checks.append({"rows": [r0, r1], "reference": ref, "reference_rows": [s0, s1], "max_abs_diff": d})
        info["row_checks"] = checks

    # rebuild from the case directory
    fresh = C.fresh_model(base_dir)
    for n in names:
        C.load_adapter_checked(fresh, os.path.join(case_dir, n), n)
    if fusion_cfg:
        fresh.load_adapter_fusion(os.path.join(case_dir, "fusion"), use_safetensors=True)
    if info.get("synthesized") and isinstance(setup, Parallel):
        d = G.max_abs(torch.cat([run_setup(fresh, c, inputs) for c in setup], dim=0), out)
    elif info.get("synthesized"):
        rows = [run_setup(fresh, c, inputs)[i:i + 1] for i, c in enumerate(setup)]  # batch_sizes [1, 1]
        d = G.max_abs(torch.cat(rows, dim=0), out)
    else:
        d = G.max_abs(run_setup(fresh, setup, inputs), out)
    assert d < C.RELOAD_TOL, (name, d)
    info["reload_max_abs_diff"] = d
    C.write_json(os.path.join(case_dir, "setup.json"), info)
    rc = " rows:" + ",".join("{:.1e}".format(c["max_abs_diff"]) for c in info.get("row_checks", []))
    print("{:<30} out={}  formula={}  reload|d|={:.1e}{}{}".format(
        name, tuple(out.shape), "-" if formula is None else "{:.1e}".format(formula), d,
        rc if "row_checks" in info else "", "  (SYNTHESIZED)" if info.get("synthesized") else ""))
    return info


def build_average_case(idx, name, new, kwargs, base_dir, pool_dir, out_dir, inputs, base_out):
    case_dir = os.path.join(out_dir, "composition", name)
    C.fresh_dir(case_dir)
    srcs = kwargs["adapter_list"]
    model = case_model(base_dir, pool_dir, srcs)
    model.average_adapter(new, **kwargs)
    out = run_setup(model, new, inputs)
    for n in srcs + [new]:
        model.save_adapter(os.path.join(case_dir, n), n, with_head=False, use_safetensors=True)
    C.save_expected(os.path.join(case_dir, "expected.safetensors"), out)

    # independent check of the averaged tensors
    sd = {n: C.load_file(os.path.join(case_dir, n, "adapter.safetensors")) for n in srcs + [new]}
    w = kwargs["weights"]
    if kwargs.get("normalize_weights", True):
        w = [x / sum(w) for x in w]
    strat = kwargs["combine_strategy"]
    worst = 0.0
    for key_new, t in sd[new].items():
        keys = [key_new.replace(".{}.".format(new), ".{}.".format(s)) for s in srcs]
        src_t = [sd[s][k] for s, k in zip(srcs, keys)]
        if strat == "linear":
            want = sum(wi * ti for wi, ti in zip(w, src_t))
        elif strat == "lora_linear_only_negate_b":
            want = sum((wi if key_new.endswith("lora_B") else abs(wi)) * ti for wi, ti in zip(w, src_t))
        else:
            continue
        worst = max(worst, (want - t).abs().max().item())
    if strat == "lora_delta_w_svd":
        for key_new in [k for k in sd[new] if k.endswith("lora_A")]:
            kb = key_new[: -len("lora_A")] + "lora_B"
            dw = sum(wi * sd[s][kb.replace(".{}.".format(new), ".{}.".format(s))]
                     @ sd[s][key_new.replace(".{}.".format(new), ".{}.".format(s))] for wi, s in zip(w, srcs))
            U, S, Vh = torch.linalg.svd(dw)
            r = kwargs["svd_rank"]
            want = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]
            got = sd[new][kb] @ sd[new][key_new]
            worst = max(worst, (want - got).abs().max().item())
    assert worst < 1e-5, (name, worst)

    fresh = C.fresh_model(base_dir)
    C.load_adapter_checked(fresh, os.path.join(case_dir, new), new)
    d = G.max_abs(run_setup(fresh, new, inputs), out)
    assert d < C.RELOAD_TOL, (name, d)
    with open(os.path.join(case_dir, new, "adapter_config.json")) as f:
        new_cfg = json.load(f)["config"]
    info = {
        "setup": new,
        "setup_repr": new,
        "setup_dict": new,
        "adapters": srcs + [new],
        "fusion": None,
        "fusion_config": None,
        "reference_ok": True,
        "average_adapter": dict(name=new, **kwargs),
        "averaged_config": new_cfg,
        "averaged_tensors_max_abs_diff": worst,
        "output_shape": list(out.shape),
        "max_abs_diff_vs_base": G.max_abs(out, base_out),
        "reload_max_abs_diff": d,
        "notes": "model.average_adapter({!r}, ...) then set_active_adapters({!r}); the source adapters are included "
                 "so that the averaging itself can be reproduced".format(new, new),
    }
    C.write_json(os.path.join(case_dir, "setup.json"), info)
    print("{:<30} out={}  averaged-tensors={:.1e}  reload|d|={:.1e}".format(name, tuple(out.shape), worst, d))
    return info


def build_all(out_dir, base_dir, inputs, base_out):
    root = os.path.join(out_dir, "composition")
    os.makedirs(root, exist_ok=True)
    for d in os.listdir(root):  # drop stale cases
        if os.path.isdir(os.path.join(root, d)):
            shutil.rmtree(os.path.join(root, d))
    names = [c[0] for c in CASES] + [c[0] for c in AVERAGE_CASES]
    assert len(set(names)) == len(names)
    with tempfile.TemporaryDirectory() as pool_dir:
        build_pool(base_dir, pool_dir)
        singles = {}
        for n in ("a", "b", "c", "la", "lb"):
            m = case_model(base_dir, pool_dir, [n])
            singles[n] = run_setup(m, n, inputs)
            singles["single_" + n] = singles[n]
        doc = []
        for idx, (name, text, fusion_cfg, notes) in enumerate(CASES):
            info = build_case(idx, name, text, fusion_cfg, notes, base_dir, pool_dir, out_dir, inputs, base_out, singles)
            if info is not None:
                doc.append(dict(name=name, files=sorted(os.listdir(os.path.join(root, name))), **info))
        for idx, (name, new, kwargs) in enumerate(AVERAGE_CASES):
            info = build_average_case(idx, name, new, kwargs, base_dir, pool_dir, out_dir, inputs, base_out)
            doc.append(dict(name=name, files=sorted(os.listdir(os.path.join(root, name))), **info))
    C.write_json(os.path.join(root, "cases.json"), doc)
    print("wrote {} composition cases".format(len(doc)))


if __name__ == "__main__":
    from gen_fixtures_lora import standalone

    sys.exit(standalone(__doc__, build_all))
