#!/usr/bin/env python3
"""Hostile `pytorch_adapter.bin` files: valid torch archives that a loader must refuse.

    python tools/gen_fixtures_hostile.py [OUT_DIR]     # OUT_DIR defaults to tests/fixtures

Each case copies `bin/ln_before` (its config and weights) and replaces `pytorch_adapter.bin` with
`torch.save` of the same state dict plus one extra entry:
  system_call   an object whose unpickling runs `os.system("touch burn_adapters_pwned")`
  eval_call     an object whose unpickling runs `builtins.eval(...)`, creating the same file
  int_entry     a plain int
  nested_dict   a dict of tensors under one key (not a flat state dict)
Unpickled by Python, the first two create `burn_adapters_pwned` in the working directory.
"""

import os
import shutil
import sys

import torch

MARKER = "burn_adapters_pwned"


class SystemCall:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class EvalCall:
    def __reduce__(self):
        return (eval, (f"open({MARKER!r}, 'w').close()",))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    source = os.path.join(out, "bin", "ln_before")
    state = torch.load(os.path.join(source, "pytorch_adapter.bin"), weights_only=True)
    first = sorted(state)[0]
    cases = {
        "system_call": SystemCall(),
        "eval_call": EvalCall(),
        "int_entry": 7,
        "nested_dict": {"inner": state[first].clone()},
    }
    for name, extra in cases.items():
        target = os.path.join(out, "hostile", name)
        os.makedirs(target, exist_ok=True)
        shutil.copy(os.path.join(source, "adapter_config.json"), target)
        torch.save({**state, "extra": extra}, os.path.join(target, "pytorch_adapter.bin"))
        print("wrote", target)


if __name__ == "__main__":
    main()
