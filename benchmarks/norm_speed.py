"""Why are group and layer norm slower than batch norm on a CPU? Time the norms two ways.

``layers``: forward + backward of each normalization layer alone (``normlab.make_norm``,
and ``torch.nn.GroupNorm`` as it is, whose channels_last CPU kernel normlab's
``GroupNorm`` avoids) on the activation shapes of the book's network at the recipe's batch size,
for each memory format (channels_last, as ``fit`` uses, and contiguous NCHW) and input
dtype (fp32, and bf16 as the convolutions hand it over under autocast). Milliseconds per
forward + backward, summed over the network's norm layers (two at 32x32, three at 16x16
and three at 8x8, as in ``normlab.Net``).

``network``: a whole training step of ``normlab.Net`` (channels_last, bf16 autocast where
supported, SGD) for each norm, and for group norm with ``torch.nn.GroupNorm``: what a norm
costs where it runs, between convolutions and ReLUs. Milliseconds per step.

Both run with the allocator setting ``fit`` makes (``normlab.train.keep_freed_memory``).
Repeats are interleaved across the variants, so that a busy machine slows them alike; the
median is reported. Prints one JSON line per variant.

    python benchmarks/norm_speed.py [--repeats N] [--batch-size B] [--only layers|network]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import normlab as nl

#: (channels, size, how many norm layers of that shape) in normlab.Net with WIDTHS.
SHAPES = ((16, 32, 1), (32, 32, 1), (24, 16, 3), (32, 8, 3))
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TORCH_GN = "group (torch.nn.GroupNorm)"
#: Layer factories by name: channels -> module.
LAYERS = {
    **{norm: lambda c, norm=norm: nl.make_norm(norm, c) for norm in ("batch", "layer", "group")},
    TORCH_GN: lambda c: nn.GroupNorm(nl.DEFAULT_GROUPS, c),
    "instance": lambda c: nl.make_norm("instance", c),
}


def layer_time(layer_name: str, fmt: torch.memory_format, dtype: torch.dtype, batch: int) -> float:
    """Seconds of forward + backward through every norm layer of the network, once."""
    total = 0.0
    for channels, size, count in SHAPES:
        layer = LAYERS[layer_name](channels)
        x = torch.randn(batch, channels, size, size, dtype=dtype)
        x = x.contiguous(memory_format=fmt).requires_grad_(True)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = layer(x)
        y.backward(torch.ones_like(y))
        total += count * (time.perf_counter() - start)
    return total


def network(name: str) -> nn.Module:
    """The book's network with the norm ``name`` (a key of LAYERS), channels_last."""
    torch.manual_seed(0)
    model = nl.Net("group" if name == TORCH_GN else name)
    if name == TORCH_GN:
        for block in model.modules():
            if isinstance(block, nl.ConvBlock):
                block.norm = nn.GroupNorm(block.norm.num_groups, block.norm.num_channels)
    return model.to(memory_format=torch.channels_last)


def interleaved(variants: dict, repeats: int) -> dict:
    """Median seconds of each variant's callable, called in turn ``repeats`` + 2 times
    (the first two are warm-up)."""
    times = {name: [] for name in variants}
    for repeat in range(repeats + 2):
        for name, call in variants.items():
            start = time.perf_counter()
            call()
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=nl.Config().batch_size)
    parser.add_argument("--only", choices=("layers", "network"))
    args = parser.parse_args()
    nl.train.keep_freed_memory()   # as fit does
    if args.only != "network":
        variants = {(n, f, d): lambda n=n, f=f, d=d: layer_time(n, FORMATS[f], DTYPES[d],
                                                                args.batch_size)
                    for n in LAYERS for f in FORMATS for d in DTYPES}
        for (name, fmt, dtype), seconds in interleaved(variants, args.repeats).items():
            print(json.dumps({"layer": name, "memory_format": fmt, "dtype": dtype,
                              "ms": round(1000 * seconds, 1)}))
    if args.only != "layers":
        dtype = nl.choose_precision("auto", torch.device("cpu"))
        x = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (args.batch_size,))

        def step(model, optimizer):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                loss = F.cross_entropy(model(x.to(dtype)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        variants = {}
        for name in ("batch", "layer", "group", TORCH_GN):
            model = network(name)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            variants[name] = lambda m=model, o=optimizer: step(m, o)
        times = interleaved(variants, args.repeats)
        for name, seconds in times.items():
            print(json.dumps({"network": name, "dtype": str(dtype).removeprefix("torch."),
                              "ms_per_step": round(1000 * seconds, 1),
                              "relative_to_batch": round(seconds / times["batch"], 2)}))


if __name__ == "__main__":
    main()
