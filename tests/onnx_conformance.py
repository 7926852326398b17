#!/usr/bin/env python3
"""Conformance of leukoscope's exported ONNX files with the peer runtime.

For every `NAME.onnx` in DIR (written with `NAME.json` by the trainer's export parity test when
LEUKOSCOPE_CONFORMANCE_DIR is set), checks that:
  * the `onnx` package's checker accepts the model (full check, with shape inference),
  * the model carries leukoscope's contract metadata,
  * onnxruntime gives the same probabilities as burn (max |diff| <= 1e-4, same argmax).
Exit status 0 when every file passes. Run by .ci/run.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

REQUIRED_METADATA = [
    "leukoscope.labels",
    "leukoscope.input_size",
    "leukoscope.mean",
    "leukoscope.std",
    "leukoscope.resize",
]
TOLERANCE = 1e-4


def check(model_path: pathlib.Path) -> list[str]:
    problems = []
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    for key in REQUIRED_METADATA:
        if key not in meta:
            problems.append(f"metadata key {key} missing")
    reference = json.loads(model_path.with_suffix(".json").read_text())
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, case in enumerate(reference["cases"]):
        x = np.asarray(case["input"], dtype=np.float32).reshape(reference["shape"])
        probs = session.run(["probabilities"], {"image": x})[0][0]
        burn = np.asarray(case["burn"], dtype=np.float32)
        worst = max(worst, float(np.max(np.abs(probs - burn))))
        if int(np.argmax(probs)) != int(np.argmax(burn)):
            problems.append(f"case {i}: argmax {np.argmax(probs)} (onnxruntime) vs {np.argmax(burn)} (burn)")
    if worst > TOLERANCE:
        problems.append(f"max |diff| {worst:.3e} > {TOLERANCE}")
    print(f"{model_path.name}: checker ok, {len(reference['cases'])} cases, max |diff| onnxruntime vs burn = {worst:.3e}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=pathlib.Path, help="folder with NAME.onnx and NAME.json pairs")
    args = parser.parse_args()
    models = sorted(args.dir.glob("*.onnx"))
    if not models:
        print(f"no .onnx files in {args.dir}", file=sys.stderr)
        return 1
    failed = 0
    for path in models:
        try:
            problems = check(path)
        except Exception as e:  # the checker and the runtime raise on non-standard files
            problems = [f"{type(e).__name__}: {e}"]
        for p in problems:
            print(f"{path.name}: FAIL {p}", file=sys.stderr)
        failed += bool(problems)
    print(f"{len(models) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
