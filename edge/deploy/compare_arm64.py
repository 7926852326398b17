#!/usr/bin/env python3
"""The aarch64 binary (under qemu) against the x86 one, end to end, with the shipped models.

Both binaries classify the same pictures with each shipped model (`edge classify --format jsonl`)
and screen the same MJPEG stream on stdin (`edge run --source -`, int8 model, each into its own
database, exported with `edge export`). The labels and the slide verdict (a decided one: each
picture is shown twice, as a camera dwells on a field) must be the same; the largest difference
of any class probability is printed. Exit status 1 on any difference of label or verdict, an
undecided verdict, or a probability difference above --max-dp.

  compare_arm64.py --arm "qemu-aarch64-static -L / target/arm64/.../edge" \
                   --x86 target/debug/edge [--pictures DIR] [--count 21] [--also M.onnx ...]

`--also` adds models to the classify check (CI: the EfficientNet files the export and quantize
tests write, so each architecture's operators are checked on aarch64, not only the shipped one's).
"""

import argparse
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def pictures(root: Path, count: int) -> list[Path]:
    """`count` pictures spread evenly over the sorted files of every class folder."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"compare_arm64: no pictures in {root}")
    step = max(1, len(files) // count)
    return files[::step][:count]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        # Under emulation a hang must fail the check, not the whole CI run.
        result = subprocess.run(cmd, capture_output=True, timeout=900, **kw)
    except subprocess.TimeoutExpired:
        sys.exit(f"compare_arm64: {' '.join(cmd[:4])} ... did not finish in 900 s")
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
        sys.exit(f"compare_arm64: {' '.join(cmd[:4])} ... exited {result.returncode}")
    return result


def classify(edge: list[str], model: Path, pics: list[Path]) -> dict[str, dict]:
    out = run(edge + ["classify", "--model", str(model), "--format", "jsonl"] + [str(p) for p in pics])
    rows = [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]
    return {r["path"]: r for r in rows}


def screen(edge: list[str], x86: list[str], model: Path, stream: bytes, db: Path) -> tuple[list[dict], str]:
    """`edge run --source -` on the stream; the frames as exported, and the SLIDE verdict."""
    out = run(
        edge
        + ["run", "--source", "-", "--model", str(model), "--variant", "int8", "--db", str(db),
           "--panel", "none", "--serial-format", "text"],
        input=stream,
    )
    verdicts = re.findall(r"^SLIDE .*?verdict=(\S+)", out.stdout.decode(), re.M)
    export = run(x86 + ["export", "--session", "1", "--format", "csv", "--db", str(db)])
    frames = list(csv.DictReader(io.StringIO(export.stdout.decode())))
    return frames, ",".join(verdicts)


def max_dp(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(float(a[k]) - float(b[k])) for k in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", required=True, help="command that runs the aarch64 edge (with qemu)")
    ap.add_argument("--x86", required=True, help="the x86 edge binary")
    data = Path(os.environ.get("LEUKOSCOPE_DATA", "../shared/data")) / "all-taleqani"
    ap.add_argument("--pictures", type=Path, default=data)
    ap.add_argument("--count", type=int, default=21)
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more models to classify with")
    ap.add_argument("--max-dp", type=float, default=0.05)
    a = ap.parse_args()

    arm, x86 = shlex.split(a.arm), shlex.split(a.x86)
    pics = pictures(a.pictures, a.count)
    models = sorted(a.models.glob("*.onnx"))
    failed = False
    print(f"{'check':<34} {'n':>4} {'same labels':>12} {'max |dp|':>10}  notes")
    for model in models + a.also:
        xr, ar = classify(x86, model, pics), classify(arm, model, pics)
        same = all(xr[p]["label"] == ar[p]["label"] for p in xr) and xr.keys() == ar.keys()
        dp = max(max_dp(xr[p]["probabilities"], ar[p]["probabilities"]) for p in xr)
        print(f"{'classify ' + model.name:<34} {len(xr):>4} {'yes' if same else 'NO':>12} {dp:>10.6f}")
        failed |= not same or dp > a.max_dp

    int8 = [m for m in models if "int8" in m.name]
    if int8:
        # A camera dwells on a field: each picture comes twice, so each is a settled field and
        # the slide gets a decided verdict (a stream of 21 different stills has no field at all).
        stream = b"".join(
            p.read_bytes() for p in pics if p.suffix.lower() in (".jpg", ".jpeg") for _ in range(2)
        )
        with tempfile.TemporaryDirectory() as tmp:
            xf, xv = screen(x86, x86, int8[0], stream, Path(tmp) / "x86.db")
            af, av = screen(arm, x86, int8[0], stream, Path(tmp) / "arm64.db")
        labels = [k for k in (xf[0] if xf else {}) if k.startswith("p_")]
        same = len(xf) == len(af) and all(
            (x["seq"], x["decision"], x["label"]) == (y["seq"], y["decision"], y["label"])
            for x, y in zip(xf, af)
        )
        dp = max(
            (abs(float(x[k] or 0) - float(y[k] or 0)) for x, y in zip(xf, af) for k in labels),
            default=0.0,
        )
        # Agreeing on "insufficient" would say nothing about the verdict the device shows.
        verdict_same = xv == av and xv not in ("", "insufficient")
        print(
            f"{'run --source - ' + int8[0].name:<34} {len(xf):>4} {'yes' if same else 'NO':>12} "
            f"{dp:>10.6f}  verdict x86 {xv or '-'}, arm64 {av or '-'}"
        )
        failed |= not same or not verdict_same or dp > a.max_dp
    print("aarch64 and x86 agree" if not failed else "aarch64 and x86 DIFFER")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
