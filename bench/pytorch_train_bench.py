#!/usr/bin/env python3
"""PyTorch CPU training-throughput reference for leukoscope's Rust trainer.

Purpose
-------
Measure how many images per second PyTorch can *train* on this CPU for the same
two architectures that the Rust trainer implements, so that
``trainer bench --model mobilenetv2|cnn --size N --batch 16 --format json``
(which prints ``{"images_per_s": ...}``) can be compared against it.  With
``--rust-bin`` the Rust command is run right after the PyTorch measurement with
the same model/size/batch and both numbers are printed side by side.

What is measured
----------------
The model is put in train mode (BatchNorm updates running stats, Dropout is
active), optimised with Adam (lr 1e-4) on cross-entropy loss.  One seeded random
batch of shape [batch, 3, S, S] (standard normal) and random labels in
[0, classes) is generated once, before timing, and reused for every step.  After
``--warmup`` untimed steps, ``--steps`` steps of
zero_grad -> forward -> loss -> backward -> optimizer.step are timed one by one
with ``time.perf_counter``.  ``images_per_s = batch * steps / sum(step times)``;
``step_ms_p50`` is the median step time.  Data generation is not timed.

Architectures (hand-written, no torchvision dependency)
-------------------------------------------------------
* ``mobilenetv2``: torchvision's MobileNetV2 backbone, same module tree so the
  backbone's state_dict keys are exactly torchvision's ``mobilenet_v2`` keys
  (``features.0.0.weight`` ... ``features.18.1.num_batches_tracked``), followed
  by our head instead of torchvision's classifier::

      global avg pool -> head.0 Linear(last, 128) -> head.1 ReLU
                      -> head.2 Dropout(0.2)       -> head.3 Linear(128, classes)

  Head parameter keys: ``head.0.weight``, ``head.0.bias``, ``head.3.weight``,
  ``head.3.bias``.
* ``cnn``: the compact CNN::

      features.0 Conv2d(3, 32, 3, padding=1)   -> features.1 ReLU -> features.2 MaxPool2d(2)
      features.3 Conv2d(32, 64, 3, padding=1)  -> features.4 ReLU -> features.5 MaxPool2d(2)
      features.6 Conv2d(64, 128, 3, padding=1) -> features.7 ReLU -> features.8 MaxPool2d(2)
      flatten -> head.0 Linear(128*(S//8)**2, 128) -> head.1 ReLU
              -> head.2 Dropout(0.5) -> head.3 Linear(128, classes)

Other modes
-----------
* ``--export-backbone PATH`` writes a randomly initialised model's state_dict
  (``.safetensors`` via the ``safetensors`` package when the path ends so,
  otherwise ``torch.save``), e.g. as a torchvision-key-layout fixture for the
  Rust pretrained-weight loader.  ``--export-head`` picks what follows the
  backbone: ``ours`` (head.0/head.3), ``torchvision`` (``classifier.1`` Linear
  to 1000 classes, like a real ImageNet checkpoint) or ``none``.
* ``--list-keys`` prints every state_dict key with shape and dtype.
* ``--count-params`` prints parameter counts.
These modes do not run the benchmark.

Example::

    python bench/pytorch_train_bench.py --model mobilenetv2 --size 128 --threads 2
    python bench/pytorch_train_bench.py --model cnn --size 224 --format json
    python bench/pytorch_train_bench.py --model mobilenetv2 \\
        --rust-bin target/release/trainer          # side by side with Rust
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

# (t, c, n, s): expansion factor, output channels, repeats, stride of first repeat.
MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #
def _make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Channel rounding exactly as torchvision.models._utils._make_divisible."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    # Make sure that round down does not go down by more than 10%.
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation(norm=BatchNorm2d, act=ReLU6): keys .0 conv, .1 bn."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """torchvision's InvertedResidual; submodule tree kept so keys are ``conv.*``."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel=1))  # pointwise expand
        layers.extend(
            [
                ConvBNReLU6(hidden, hidden, kernel=3, stride=stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # pointwise-linear project
                nn.BatchNorm2d(oup, eps=BN_EPS, momentum=BN_MOMENTUM),
            ]
        )
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 backbone (torchvision layout) + leukoscope head."""

    def __init__(self, num_classes: int = 4, width_mult: float = 1.0, round_nearest: int = 8,
                 head_hidden: int = 128, head_dropout: float = 0.2):
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [ConvBNReLU6(3, input_channel, kernel=3, stride=2)]
        for t, c, n, s in MOBILENETV2_SETTINGS:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.head = nn.Sequential(
            nn.Linear(self.last_channel, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=head_dropout),
            nn.Linear(head_hidden, num_classes),
        )
        # torchvision's initialisation (the head uses torchvision's Linear init too).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.head(x)


class CompactCNN(nn.Module):
    """Three conv3x3(+bias)/ReLU/MaxPool2d(2) stages, then a 2-layer MLP head."""

    def __init__(self, num_classes: int = 4, size: int = 128, head_hidden: int = 128,
                 head_dropout: float = 0.5):
        super().__init__()
        if size < 8:
            raise ValueError("--size must be at least 8 for the CNN")
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        spatial = size // 8  # MaxPool2d(2) floors, three times
        self.head = nn.Sequential(
            nn.Linear(128 * spatial * spatial, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=head_dropout),
            nn.Linear(head_hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.head(x)


def build_model(name: str, size: int, width: float, classes: int) -> nn.Module:
    if name == "mobilenetv2":
        return MobileNetV2(num_classes=classes, width_mult=width)
    if name == "cnn":
        return CompactCNN(num_classes=classes, size=size)
    raise ValueError(f"unknown model {name!r}")


def count_params(model: nn.Module) -> Dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("features."))
    return {"params": total, "trainable": trainable, "backbone_params": backbone,
            "head_params": total - backbone, "buffers": buffers}


# --------------------------------------------------------------------------- #
# Export / listing
# --------------------------------------------------------------------------- #
def export_state_dict(model: nn.Module, head: str, classes_tv: int = 1000,
                      drop_num_batches_tracked: bool = False) -> "OrderedDict[str, torch.Tensor]":
    sd = OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())
    if head in ("none", "torchvision"):
        for k in [k for k in sd if k.startswith("head.")]:
            del sd[k]
    if head == "torchvision":
        if not isinstance(model, MobileNetV2):
            raise ValueError("--export-head torchvision only makes sense for mobilenetv2")
        fc = nn.Linear(model.last_channel, classes_tv)
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)
        sd["classifier.1.weight"] = fc.weight.detach().clone()
        sd["classifier.1.bias"] = fc.bias.detach().clone()
    if drop_num_batches_tracked:
        for k in [k for k in sd if k.endswith("num_batches_tracked")]:
            del sd[k]
    return sd


def save_state_dict(sd: "OrderedDict[str, torch.Tensor]", path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import save_file
        except ImportError as exc:  # pragma: no cover - depends on environment
            raise SystemExit("path ends in .safetensors but the 'safetensors' package is "
                             f"not installed ({exc}); use a .pth path or pip install safetensors")
        save_file(dict(sd), path, metadata={"format": "pt"})
        return "safetensors"
    torch.save(sd, path)
    return "torch.save"


def list_keys(sd: "OrderedDict[str, torch.Tensor]", out=sys.stdout) -> None:
    for k, v in sd.items():
        shape = "[" + ", ".join(str(d) for d in v.shape) + "]"
        print(f"{k}\t{shape}\t{str(v.dtype).replace('torch.', '')}", file=out)
    print(f"# {len(sd)} tensors, {sum(v.numel() for v in sd.values())} elements", file=out)


# --------------------------------------------------------------------------- #
# Benchmark
# --------------------------------------------------------------------------- #
def run_torch_bench(args: argparse.Namespace) -> Dict[str, object]:
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.size, args.width, args.classes)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), generator=gen)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    times: List[float] = []
    loss = float("nan")
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)

    total = sum(times)
    ms = [t * 1000.0 for t in times]
    result: Dict[str, object] = {
        "framework": "pytorch",
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "width": args.width,
        "classes": args.classes,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "images_per_s": args.batch * args.steps / total if total > 0 else float("nan"),
        "step_ms_p50": statistics.median(ms),
        "step_ms_mean": statistics.fmean(ms),
        "step_ms_min": min(ms),
        "step_ms_max": max(ms),
        "total_s": total,
        "final_loss": loss,
        "channels_last": bool(args.channels_last),
        "torch_version": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # 1-minute load average before the run: > ~0.5 means other work shared the CPU.
        "loadavg_1m_before": load_before,
    }
    result.update(count_params(model))
    return result


def run_rust_bench(args: argparse.Namespace) -> Dict[str, object]:
    cmd = [args.rust_bin, "bench", "--model", args.model, "--size", str(args.size),
           "--batch", str(args.batch), "--format", "json"]
    cmd += shlex.split(args.rust_args or "")
    env = dict(os.environ)
    # Best effort to give the Rust side the same thread budget.
    env.setdefault("RAYON_NUM_THREADS", str(args.threads))
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"rust bench failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr}")
    parsed = None
    for line in reversed(proc.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if parsed is None:
        try:
            parsed = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise SystemExit(f"could not parse JSON from rust bench output:\n{proc.stdout}")
    if "images_per_s" not in parsed:
        raise SystemExit(f"rust bench JSON has no 'images_per_s': {parsed}")
    parsed.setdefault("framework", "rust")
    parsed["command"] = shlex.join(cmd)
    parsed["wall_s"] = wall
    return parsed


def print_table(res: Dict[str, object], rust: Optional[Dict[str, object]]) -> None:
    title = (f"{res['model']}  size={res['size']}  batch={res['batch']}  width={res['width']}  "
             f"classes={res['classes']}  threads={res['threads']}  torch={res['torch_version']}")
    print(title)
    print(f"params={res['params']:,}  (backbone {res['backbone_params']:,}, head {res['head_params']:,})  "
          f"warmup={res['warmup']}  steps={res['steps']}  loadavg(1m) before={res['loadavg_1m_before']:.2f}")
    rows = [("images/s", "images_per_s", "{:.2f}"), ("step ms p50", "step_ms_p50", "{:.1f}"),
            ("step ms mean", "step_ms_mean", "{:.1f}"), ("step ms min", "step_ms_min", "{:.1f}"),
            ("step ms max", "step_ms_max", "{:.1f}")]
    header = f"{'':<14}{'pytorch':>12}" + (f"{'rust':>12}" if rust else "")
    print(header)
    for label, key, fmt in rows:
        line = f"{label:<14}{fmt.format(res[key]):>12}"
        if rust:
            val = rust.get(key)
            line += f"{(fmt.format(val) if isinstance(val, (int, float)) else '-'):>12}"
        print(line)
    if rust:
        ratio = float(rust["images_per_s"]) / float(res["images_per_s"])
        print(f"rust / pytorch throughput: {ratio:.3f}x")


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mobilenetv2", "cnn"], default="mobilenetv2")
    p.add_argument("--size", type=int, default=128, help="input height = width (default 128)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action="store_true",
                   help="use channels_last memory format (off by default: plain NCHW)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--rust-bin", metavar="PATH",
                   help="also run 'PATH bench --model M --size N --batch B --format json' and "
                        "print both results side by side")
    p.add_argument("--rust-args", default="", help="extra arguments appended to the Rust command")
    p.add_argument("--export-backbone", metavar="PATH",
                   help="save a randomly initialised model's state_dict to PATH (.safetensors or "
                        "torch.save) and exit without benchmarking")
    p.add_argument("--export-head", choices=["ours", "torchvision", "none"], default="ours",
                   help="head keys in the export: ours (head.0/head.3), torchvision "
                        "(classifier.1, 1000 classes) or none (backbone only); default ours")
    p.add_argument("--drop-num-batches-tracked", action="store_true",
                   help="omit BatchNorm num_batches_tracked from the export / listing")
    p.add_argument("--list-keys", action="store_true",
                   help="print state_dict keys, shapes and dtypes and exit")
    p.add_argument("--count-params", action="store_true", help="print parameter counts and exit")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.size < 1 or args.threads < 1:
        p.error("steps/batch/size/threads must be >= 1 and warmup >= 0")
    if args.classes < 1 or args.width <= 0:
        p.error("classes must be >= 1 and width > 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.export_backbone or args.list_keys or args.count_params:
        torch.manual_seed(args.seed)
        model = build_model(args.model, args.size, args.width, args.classes)
        if args.count_params:
            counts = count_params(model)
            if args.format == "json":
                print(json.dumps({"model": args.model, "size": args.size, "width": args.width,
                                  "classes": args.classes, **counts}))
            else:
                print(f"{args.model} size={args.size} width={args.width} classes={args.classes}: "
                      + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
        if args.export_backbone or args.list_keys:
            sd = export_state_dict(model, args.export_head,
                                   drop_num_batches_tracked=args.drop_num_batches_tracked)
            if args.list_keys:
                list_keys(sd)
            if args.export_backbone:
                how = save_state_dict(sd, args.export_backbone)
                print(f"wrote {len(sd)} tensors to {args.export_backbone} ({how})", file=sys.stderr)
        return 0

    result = run_torch_bench(args)
    rust = run_rust_bench(args) if args.rust_bin else None
    if args.format == "json":
        out = dict(result)
        if rust is not None:
            out["rust"] = rust
            out["rust_over_pytorch"] = float(rust["images_per_s"]) / float(result["images_per_s"])
        print(json.dumps(out))
    else:
        print_table(result, rust)
    return 0


if __name__ == "__main__":
    sys.exit(main())
