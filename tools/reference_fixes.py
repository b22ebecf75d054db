"""Fixes of defects of adapters 1.3.0 that the fixture scripts and the Python checkers apply, so that the methods
they break can be compared at all (docs/guide.md, "Where we differ from AdapterHub"):

- `GLOWCouplingBlock.forward` uses the inputs in place of its `s2` subnetwork, slices the subnetworks' outputs along
  the sequence and returns a list, so a GLOW invertible adapter fails in its first forward: `patch_glow` runs
  FrEIA's coupling (the block AdapterHub's is taken from) on AdapterHub's modules;
- `TaskSpecificLinear` (MTL-LoRA's `task_specific_matrix_type="linear"`) assigns a parameter before calling
  `nn.Module.__init__`, so building it fails: `patch_task_specific_linear` adds that call;
- DoRA (`use_dora`) rescales the bias along with `W x` and takes the norm of `W + B A` without LoRA's scaling
  `alpha / r`, so its output is not DoRA's `b + m ⊙ (W + s·B A) x / ‖W + s·B A‖` unless `alpha = r` and the layer
  has no bias: `patch_dora` computes DoRA as PEFT does (norm detached) on AdapterHub's modules and parameters.
"""

import torch


def glow_forward(self, x, c=[], rev=False):
    """FrEIA's GLOWCouplingBlock (Ardizzone et al.), along the last dimension, on AdapterHub's `s1` and `s2`."""

    def split(r, first):
        return r[..., :first], r[..., first:]

    x1, x2 = split(x, self.split_len1)
    if not rev:
        s2, t2 = split(self.s2(x2), self.split_len1)
        y1 = self.e(s2) * x1 + t2
        s1, t1 = split(self.s1(y1), self.split_len2)
        y2 = self.e(s1) * x2 + t1
    else:
        s1, t1 = split(self.s1(x1), self.split_len2)
        y2 = (x2 - t1) / self.e(s1)
        s2, t2 = split(self.s2(y2), self.split_len1)
        y1 = (x1 - t2) / self.e(s2)
    return torch.cat((y1, y2), -1)


def patch_glow():
    """Runs `glow_forward` in every GLOWCouplingBlock."""
    from adapters.methods.modeling import GLOWCouplingBlock

    GLOWCouplingBlock.forward = glow_forward


def patch_task_specific_linear():
    """adapters 1.3.0's TaskSpecificLinear never calls nn.Module.__init__, so building it fails."""
    from adapters.methods import lora

    def init(self, rank, dtype=None):
        torch.nn.Module.__init__(self)
        self.rank = rank
        self.dtype = dtype
        self.values = torch.nn.Parameter(torch.ones(rank, rank, dtype=dtype))

    lora.TaskSpecificLinear.__init__ = init


def dora_output(layer, lora, layer_output, hidden_states):
    """PEFT's DoRA on `layer_output = W x + b` and the scaled low-rank contribution `hidden_states`."""
    delta_w = layer.maybe_t(lora.delta_w) * lora.scaling  # the layer weight's layout
    weight = layer.weight
    if layer.fan_in_fan_out:
        weight, delta_w = weight.t(), delta_w.t()
    norm = torch.linalg.norm(weight + delta_w, dim=1).detach()
    factor = (lora.m.weight.view(-1) / norm).view(1, -1)
    base = layer_output - layer.bias if layer.bias is not None else layer_output
    return layer_output + (factor - 1) * base + factor * hidden_states


def patch_dora():
    """Runs `dora_output` where adapters 1.3.0's LoRALinear applies DoRA."""
    from adapters.methods import lora as L

    def forward(self, input_states):
        if self.fan_in_fan_out:
            layer_output = torch.nn.functional.linear(input_states, self.weight.t(), bias=self.bias)
        else:
            layer_output = torch.nn.Linear.forward(self, input_states)
        if not self.merged:
            adapter_setup = self.get_active_setup()
            if adapter_setup is not None:
                state = L.LoRAState(input_states, None, layer_output, None)
                _, hidden_states, layer_output, last = self.compose(adapter_setup, state)
                last_lora = self.loras[last]
                if last_lora.use_dora:
                    layer_output = dora_output(self, last_lora, layer_output, hidden_states)
                else:
                    layer_output = last_lora.com(layer_output, hidden_states, scaling=1.0)
        return layer_output

    L.LoRALinearTorch.forward = forward


def apply_all():
    patch_glow()
    patch_task_specific_linear()
    patch_dora()
