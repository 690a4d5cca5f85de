"""Writes the PyTorch reference fixtures that minima's worker tests compare to.

    python3 python/make_fixtures.py worker/tests/fixtures

- state_dicts.txt: the state_dict keys and shapes of all 47 study models.
- torch_reference.json: small models in float64 with their flat parameters
  (in `model.parameters()` order), inputs, outputs, mean loss and the
  gradient of the loss, computed by PyTorch's own modules and autograd.
"""
import json
import sys
from pathlib import Path

import torch

from minima_torch import build


def study_models():
    for arch in ["gru", "lstm"]:
        for layers in [1, 6, 11]:
            for hidden in [8, 16, 32]:
                yield arch, layers, hidden, None
    for layers in [1, 6, 11]:
        for heads in [1, 2, 4]:
            for hidden in [8, 16, 32]:
                yield "transformer", layers, hidden, heads
    yield "lstm", 2, 14, None
    yield "transformer", 2, 12, 1


def label(arch, layers, hidden, heads):
    base = f"{arch}-l{layers}-d{hidden}"
    return base if heads is None else f"{base}-h{heads}"


def listing(out):
    lines = []
    for arch, layers, hidden, heads in study_models():
        net = build(arch, layers, hidden, heads)
        count = sum(p.numel() for p in net.parameters())
        lines.append(f"# {label(arch, layers, hidden, heads)} {count}")
        for name, tensor in net.state_dict().items():
            lines.append(f"{name} [{', '.join(str(d) for d in tensor.shape)}]")
    (out / "state_dicts.txt").write_text("\n".join(lines) + "\n")


def reference_case(arch, layers, hidden, heads, task, scale, seed):
    torch.manual_seed(seed)
    net = build(arch, layers, hidden, heads).double().eval()
    x = (torch.rand(6, 5, 1, dtype=torch.float64) * 2 - 1) * scale
    if task == "sequence-classification":
        y = (x.sum(1) >= 0).double()
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        y = x[:, -1] + 0.5 * scale
        loss_fn = torch.nn.MSELoss()
    outputs = net(x)
    loss = loss_fn(outputs, y)
    params = list(net.parameters())
    grads = torch.autograd.grad(loss, params)
    flat = lambda ts: [v for t in ts for v in t.detach().reshape(-1).tolist()]
    return {
        "arch": arch, "layers": layers, "hidden": hidden, "heads": heads, "task": task,
        "theta": flat(params), "x": x.reshape(6, 5).tolist(), "y": y.reshape(-1).tolist(),
        "outputs": outputs.detach().reshape(-1).tolist(), "loss": loss.item(), "grad": flat(grads),
    }


def references(out):
    cases = [
        reference_case("lstm", 2, 4, None, "sequence-classification", 2.0, 1),
        reference_case("gru", 2, 4, None, "sequence-classification", 2.0, 2),
        reference_case("transformer", 2, 4, 2, "sequence-classification", 2.0, 3),
        reference_case("lstm", 1, 3, None, "sequence-learning", 1.0, 4),
        reference_case("gru", 1, 3, None, "sequence-learning", 1.0, 5),
        reference_case("transformer", 1, 6, 3, "sequence-learning", 1.0, 6),
        # The study's raw scale: inputs in (-1000, 1000).
        reference_case("lstm", 1, 8, None, "sequence-classification", 1000.0, 7),
        reference_case("transformer", 1, 8, 4, "sequence-classification", 1000.0, 8),
    ]
    (out / "torch_reference.json").write_text(json.dumps(cases, indent=0) + "\n")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "worker/tests/fixtures")
    target.mkdir(parents=True, exist_ok=True)
    listing(target)
    references(target)
