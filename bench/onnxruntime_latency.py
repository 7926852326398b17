#!/usr/bin/env python3
"""Inference latency of an ONNX file in onnxruntime (the peer runtime `edge bench` is compared with).

Prints one JSON object per model: p50/p95 over --runs single-image runs after --warmup, with
--threads intra-op threads (1 = the same as `edge bench --threads 1`).
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="+")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    for path in a.models:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.inter_op_num_threads = 1
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(a.warmup):
            s.run(None, {inp.name: x})
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            s.run(None, {inp.name: x})
            times.append((time.perf_counter() - t) * 1e3)
        times.sort()
        print(json.dumps({
            "model": path,
            "runtime": f"onnxruntime {ort.__version__}",
            "threads": a.threads,
            "inference_ms_p50": times[len(times) // 2],
            "inference_ms_p95": times[int(0.95 * (len(times) - 1))],
        }))


if __name__ == "__main__":
    main()
