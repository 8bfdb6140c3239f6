"""A layer table with output shapes and parameter counts (what seed 004 §10.13 gets from torchsummary)."""

from __future__ import annotations

import torch

from pipeline.spec import ModelSpec


def _shape(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return str(list(out.shape))
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape(o) for o in out)
    return "-"


def layer_table(spec: ModelSpec, batch: int = 1) -> str:
    """Each leaf layer with its output shape for a batch of the spec's inputs and its parameter count."""
    model = spec.build().eval()
    rows: list[tuple[str, str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(
                module.register_forward_hook(
                    lambda mod, _inp, out, name=name: rows.append(
                        (name, type(mod).__name__, _shape(out), sum(p.numel() for p in mod.parameters()))
                    )
                )
            )
    inputs = spec.example_inputs([spec.examples[i % len(spec.examples)] for i in range(batch)])
    with torch.no_grad():
        out = model(*inputs)
    for hook in hooks:
        hook.remove()
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct or not rows:
        rows.append(("(own parameters)", type(model).__name__, _shape(out), direct))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    widths = [max(len(str(r[i])) for r in rows + [("Layer", "Type", "Output shape", "Params")]) for i in range(4)]
    header = ("Layer", "Type", "Output shape", "Params")
    line = "-" * (sum(widths) + 6)
    fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:<{widths[2]}}}  {{:>{widths[3]}}}"
    out_lines = [
        f"{spec.name}: input " + ", ".join(f"{t.name} {[batch, *t.shape]} {t.dtype}" for t in spec.inputs),
        line,
        fmt.format(*header),
        line,
    ]
    out_lines += [fmt.format(n, t, s, f"{p:,}") for n, t, s, p in rows]
    out_lines += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Outputs: {', '.join(f'{o.name} {[batch, *o.shape]}' for o in spec.outputs)}",
    ]
    return "\n".join(out_lines)
