#!/usr/bin/env python3
"""Conformance of leukoscope's int8 ONNX files (from `quantize`), and of the shipped f32 file, with
onnxruntime.

For every `NAME.onnx` in DIR (written with `NAME.json` by quantize/tests/conformance.rs, or for
the shipped model by tests/tests/shipped_model.rs with its inputs in a raw `NAME.f32` file, when
LEUKOSCOPE_CONFORMANCE_DIR is set), checks that:
  * the `onnx` package's checker accepts the model (full check, with shape inference),
  * it uses only default-domain operators (standard ONNX, no com.microsoft ones),
  * it carries leukoscope's contract metadata and, unless `NAME.json` says `"precision": "f32"`
    (the shipped f32 file), the quantization recipe and int8 convolutions,
  * onnxruntime and tract agree on the top-1 class for at least 99.5 % of the evaluation inputs,
  * for a model with an unfamiliarity score (`NAME.json` has `unfamiliarity`: the output, the
    threshold, tract's scores), onnxruntime's score is within 5 % of the threshold of tract's (the
    two engines' int8 kernels round the features differently: 2.3 % measured on the shipped
    model) and on the same side of the threshold for at least 99.5 % of the inputs.
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
    "leukoscope.quantization",
]
MIN_AGREEMENT = 0.995
# Largest score difference between the engines, as a share of the threshold.
SCORE_TOLERANCE = 0.05


def check(model_path: pathlib.Path) -> list[str]:
    problems = []
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    foreign = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        problems.append(f"non-standard operators {foreign}")
    reference = json.loads(model_path.with_suffix(".json").read_text())
    int8 = reference.get("precision", "int8") == "int8"
    ops = {n.op_type for n in model.graph.node}
    if int8 and "QLinearConv" not in ops:
        problems.append("no QLinearConv: not an int8 model")
    meta = {p.key: p.value for p in model.metadata_props}
    for key in REQUIRED_METADATA if int8 else REQUIRED_METADATA[:-1]:
        if key not in meta:
            problems.append(f"metadata key {key} missing")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    same, worst = 0, 0.0
    if "inputs_file" in reference:
        # Large evaluation sets: the inputs as raw little-endian f32, one after the other.
        raw = np.fromfile(model_path.parent / reference["inputs_file"], dtype="<f4")
        inputs = raw.reshape([-1] + list(reference["shape"][1:]))
        cases = [{"input": x, "tract": t} for x, t in zip(inputs, reference["tract"])]
        if len(cases) != len(reference["tract"]):
            problems.append(f"{len(inputs)} inputs for {len(reference['tract'])} tract results")
    else:
        cases = reference["cases"]
    score = reference.get("unfamiliarity")
    outputs = ["probabilities"] + ([score["output"]] if score else [])
    same_side, worst_score = 0, 0.0
    for i, case in enumerate(cases):
        x = np.asarray(case["input"], dtype=np.float32).reshape(reference["shape"])
        result = session.run(outputs, {"image": x})
        probs = result[0][0]
        tract = np.asarray(case["tract"], dtype=np.float32)
        worst = max(worst, float(np.max(np.abs(probs - tract))))
        same += int(np.argmax(probs)) == int(np.argmax(tract))
        if score:
            ours, theirs = float(result[1][0]), float(score["tract"][i])
            worst_score = max(worst_score, abs(ours - theirs))
            same_side += (ours > score["threshold"]) == (theirs > score["threshold"])
    agreement = same / len(cases)
    if agreement < MIN_AGREEMENT:
        problems.append(f"top-1 agreement onnxruntime vs tract {agreement:.4f} < {MIN_AGREEMENT}")
    line = (
        f"{model_path.name}: checker ok, {len(cases)} cases, top-1 agreement onnxruntime vs tract "
        f"{100 * agreement:.2f} %, max |diff| {worst:.3e}"
    )
    if score:
        if len(score["tract"]) != len(cases):
            problems.append(f"{len(score['tract'])} tract scores for {len(cases)} cases")
        sides = same_side / len(cases)
        if sides < MIN_AGREEMENT:
            problems.append(f"unfamiliar decision agreement {sides:.4f} < {MIN_AGREEMENT}")
        if worst_score > SCORE_TOLERANCE * score["threshold"]:
            problems.append(
                f"unfamiliarity score differs by {worst_score:.4g} (threshold {score['threshold']:.4g})"
            )
        line += (
            f"; unfamiliarity: same side of the threshold {100 * sides:.2f} %, "
            f"max |diff| {worst_score:.3e} (threshold {score['threshold']:.3f})"
        )
    print(line)
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
