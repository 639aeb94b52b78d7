"""Why are group and layer norm slower than batch norm on a CPU? Time each norm layer alone.

Times forward + backward of one normalization layer (``normlab.make_norm``, and
``torch.nn.GroupNorm`` as it is, whose slow channels_last CPU kernel normlab's
``GroupNorm`` avoids) on the activation shapes of the book's network at batch size 256,
for each memory format (channels_last, as ``fit`` uses, and contiguous NCHW) and input
dtype (fp32, and bf16 as the convolutions hand it over under autocast). Repeats are interleaved across the
variants, so that a busy machine slows them alike; the median is reported.

Prints one JSON line per (layer, memory format, dtype): milliseconds per forward +
backward, summed over the network's norm layers (two at 32x32, three at 16x16 and three
at 8x8 per image, as in ``normlab.Net``).

    python benchmarks/norm_speed.py [--repeats N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import normlab as nl

#: (channels, size, how many norm layers of that shape) in normlab.Net with WIDTHS.
SHAPES = ((16, 32, 1), (32, 32, 1), (24, 16, 3), (32, 8, 3))
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Layer factories by name: channels -> module.
LAYERS = {
    **{norm: lambda c, norm=norm: nl.make_norm(norm, c) for norm in ("batch", "layer", "group")},
    "group (torch.nn.GroupNorm)": lambda c: nn.GroupNorm(nl.DEFAULT_GROUPS, c),
    "instance": lambda c: nl.make_norm("instance", c),
}


def step_time(layer_name: str, fmt: torch.memory_format, dtype: torch.dtype, batch: int) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    variants = [(n, f, d) for n in LAYERS for f in FORMATS for d in DTYPES]
    times = {v: [] for v in variants}
    for repeat in range(args.repeats + 2):
        for layer, fmt, dtype in variants:
            seconds = step_time(layer, FORMATS[fmt], DTYPES[dtype], args.batch_size)
            if repeat >= 2:  # the first two are warm-up
                times[(layer, fmt, dtype)].append(seconds)
    for (layer, fmt, dtype), values in times.items():
        print(json.dumps({"layer": layer, "memory_format": fmt, "dtype": dtype,
                          "ms": round(1000 * statistics.median(values), 1)}))


if __name__ == "__main__":
    main()
