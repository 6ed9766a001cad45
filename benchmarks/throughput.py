"""Scoring throughput against torch + scikit-learn and against this machine's own limit.

In one run, on the same MNIST rows and the same DEC-size encoder (784-500-500-2000-10,
k = 10, trained briefly here unless --bundle is given), interleaved over --repeats rounds
(medians reported, since these machines are noisy):

  limit      torch.mm 8192x8192 fp32 GFLOP/s / (2 x the encoder's multiply-adds per row)
  deepclust  fp32 and int8 fused pipelines as `deepclust assign` runs them, per read batch size
             (single calls of small batches: see latency)
  ort+faiss  the unfused path: ONNX encoder, then a FAISS flat search
  torch      eager encoder + scikit-learn KMeans.predict, per batch size
  cut-over   fused argmin vs FAISS search as k grows (random centroids)
  latency    single-row and small-batch Assigner.assign, p50/p99
  service    8 threads sharing one Assigner, single-row requests: requests/s, p50/p99
  agreement  int8 vs fp32 labels on all 70,000 MNIST rows

Writes benchmarks/results/throughput.json. Peak RSS for 1M/4M rows: streaming_rss.py.

    .venv/bin/python benchmarks/throughput.py [--rows 131072] [--bundle PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
WORK = HERE / "work"
BATCHES = (64, 256, 1024, 4096, 16384)
HIDDEN = (500, 500, 2000)


def train_bundle(path: Path, x, pre, epochs: int):
    from deepclust.trainer.estimator import DeepClustering

    model = DeepClustering(10, hidden=HIDDEN, latent_dim=10, epochs=epochs, device="cpu", seed=0)
    model.fit(x, preprocessing=pre)
    model.save(path, overwrite=True)
    return model


def encoder_macs(bundle) -> int:
    """Multiply-adds per row of the bundle's encoder (Gemm, MatMul and Conv nodes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(bundle.encoder_path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    macs = 0
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul"):
            macs += weights[node.input[1]].size
        elif node.op_type == "Conv":  # one kernel's worth per output pixel and channel
            out_h, out_w = shapes[node.output[0]][2:]
            macs += weights[node.input[1]].size * out_h * out_w
    return int(macs)


def gemm_gflops(n: int = 8192, reps: int = 3) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def rows_per_second(fn, x: np.ndarray, batch: int) -> float:
    """Rows/s of ``fn`` called on consecutive ``batch``-row slices of ``x``."""
    t = time.perf_counter()
    for s in range(0, len(x), batch):
        fn(x[s:s + batch])
    return len(x) / (time.perf_counter() - t)


def streamed(assigner):
    """What `deepclust assign` does with each read batch: a reader fills a buffer (the copy),
    the job re-cuts the stream into encoder calls, the Assigner scores each call."""
    from deepclust.runtime.scoring import DEFAULT_CHUNK_ROWS, scoring_calls

    def run(x, batch):
        reads = (x[s:s + batch].copy() for s in range(0, len(x), batch))
        for call in scoring_calls(reads, 0, assigner.batch_size, DEFAULT_CHUNK_ROWS):
            assigner._assign_prepared(call, False, False)

    return run


def torch_sklearn_scorer(bundle, model):
    """What users have without deepclust: the torch encoder, then KMeans.predict."""
    import torch
    from sklearn.cluster import KMeans

    c = bundle.centroids
    km = KMeans(len(c), init=c, n_init=1, max_iter=1).fit(c)  # centres = the bundle's centroids
    km.cluster_centers_ = c.copy()
    enc = model.embedder_.eval()
    scale = np.float32(bundle.manifest.preprocessing.scale)

    def score(x):
        with torch.inference_mode():
            z = enc(torch.from_numpy(x) * scale).numpy()
        return km.predict(z)

    return score


def cutover(bundle, x, ks=(10, 100, 1000, 10000, 50000), batch=1024):
    """Fused argmin in the graph vs ONNX encoder + FAISS flat search, as k grows."""
    from deepclust.runtime import Assigner
    from deepclust.runtime.bundle import PIPELINE, PIPELINE_INT8
    from deepclust.runtime.search import CentroidIndex
    from deepclust.trainer.pipeline_graph import fuse_pipeline

    from deepclust.runtime.session import create_session

    encoder = bundle.encoder_path.read_bytes()
    d = bundle.manifest.latent_dim
    rows = []
    for k in ks:
        c = np.random.default_rng(k).normal(size=(k, d)).astype(np.float32)
        fused = create_session(fuse_pipeline(encoder, bundle.manifest.preprocessing, c), device="cpu")
        files = {n: h for n, h in bundle.manifest.files.items() if n not in (PIPELINE, PIPELINE_INT8)}
        plain = Assigner(dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, files=files),
                                             centroids=c), device="cpu")
        plain.index = CentroidIndex(c, device="cpu")
        fused_fn = lambda b: fused.run(["label", "distance"], {"x": b})  # noqa: E731
        plain_fn = lambda b: plain._assign_prepared(b.copy(), False, False)  # noqa: E731
        r_fused = rows_per_second(fused_fn, x, batch)
        r_plain = rows_per_second(plain_fn, x, batch)
        rows.append({"k": k, "fused_rows_per_s": round(r_fused), "ort_faiss_rows_per_s": round(r_plain),
                     "faiss_over_fused": round(r_plain / r_fused, 3)})
    return rows


def latencies(assigner, x, batch: int, calls: int = 2000) -> dict:
    for i in range(50):
        assigner.assign(x[i:i + batch])
    t = []
    for i in range(calls):
        s = (i * batch) % (len(x) - batch)
        t0 = time.perf_counter()
        assigner.assign(x[s:s + batch])
        t.append(time.perf_counter() - t0)
    t = np.asarray(t) * 1e3
    return {"batch": batch, "p50_ms": round(float(np.percentile(t, 50)), 4),
            "p99_ms": round(float(np.percentile(t, 99)), 4)}


def service_load(assigner, x, clients: int = 8, requests: int = 500, batch: int = 1) -> dict:
    """``clients`` threads share one Assigner, each sending ``requests`` calls of ``batch`` rows:
    requests/s over all of them, and the per-call latency they saw."""
    from concurrent.futures import ThreadPoolExecutor

    def client(c):
        t = []
        for i in range(requests):
            s = ((c * requests + i) * batch) % (len(x) - batch)
            t0 = time.perf_counter()
            assigner.assign(x[s:s + batch])
            t.append(time.perf_counter() - t0)
        return t

    latencies(assigner, x, batch, calls=20)  # warm-up
    with ThreadPoolExecutor(clients) as pool:
        t0 = time.perf_counter()
        lat = np.concatenate(list(pool.map(client, range(clients)))) * 1e3
        wall = time.perf_counter() - t0
    return {"clients": clients, "batch": batch, "requests_per_s": round(clients * requests / wall),
            "p50_ms": round(float(np.percentile(lat, 50)), 4), "p99_ms": round(float(np.percentile(lat, 99)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=131_072, help="rows scored per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5, help="pretraining epochs of the benchmark's encoder")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "throughput.json")
    args = ap.parse_args()

    import onnxruntime
    import torch

    from deepclust.runtime import Assigner, load_bundle
    from deepclust.runtime.bundle import PIPELINE, PIPELINE_INT8
    from deepclust.trainer.datasets import load_dataset

    torch.set_num_threads(os.cpu_count())
    ds = load_dataset("mnist", data_dir=args.data_dir, download=False)
    mnist = ds.x.reshape(len(ds.x), -1).astype(np.float32)
    x = np.resize(mnist, (args.rows, mnist.shape[1]))  # MNIST rows, tiled
    WORK.mkdir(exist_ok=True)
    path = WORK / "throughput_bundle"
    print(f"training the benchmark encoder ({args.epochs} epochs on MNIST)...", flush=True)
    model = train_bundle(path, ds.x, ds.preprocessing, args.epochs)
    bundle = load_bundle(path)
    macs = encoder_macs(bundle)

    exact = Assigner(bundle, device="cpu", precision="fp32")
    fast = Assigner(bundle, device="cpu", precision="int8")
    default = Assigner(bundle, device="cpu")
    files = {n: h for n, h in bundle.manifest.files.items() if n not in (PIPELINE, PIPELINE_INT8)}
    unfused = Assigner(dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, files=files)),
                       device="cpu")
    torch_fn = torch_sklearn_scorer(bundle, model)

    contenders = {("limit", 0): None}
    for b in BATCHES:
        contenders[("deepclust fp32", b)] = streamed(exact)
        contenders[("deepclust int8", b)] = streamed(fast)
        contenders[("torch eager + sklearn", b)] = torch_fn
    contenders[("ort + faiss (unfused)", 1024)] = unfused.assign
    contenders[("ort + argmin (fused)", 1024)] = exact.assign
    samples: dict = {key: [] for key in contenders}
    for rep in range(args.repeats):
        print(f"round {rep + 1}/{args.repeats}", flush=True)
        for key, fn in contenders.items():
            if key[0] == "limit":
                samples[key].append(gemm_gflops() * 1e9 / (2 * macs))
            elif key[0].startswith("deepclust"):
                t = time.perf_counter()
                fn(x, key[1])
                samples[key].append(len(x) / (time.perf_counter() - t))
            else:
                samples[key].append(rows_per_second(fn, x, key[1]))
    med = {key: statistics.median(v) for key, v in samples.items()}
    limit = med[("limit", 0)]
    torch_best_batch = max(BATCHES, key=lambda b: med[("torch eager + sklearn", b)])
    torch_best = med[("torch eager + sklearn", torch_best_batch)]

    agree = float(np.mean(exact.assign(mnist).labels == fast.assign(mnist).labels))
    print("cut-over and latency...", flush=True)
    cut = cutover(bundle, x[:32768])
    lat = {name: [latencies(a, mnist, b) for b in (1, 8, 64)] for name, a in (("fp32", exact), ("int8", fast))}
    # A service: many request threads sharing one Assigner, with onnxruntime's default thread
    # pool (one thread per core) or one thread per call.
    service = {f"{p} threads={t or 'default'}": service_load(Assigner(bundle, device="cpu", precision=p, threads=t),
                                                             mnist)
               for p in ("fp32", "int8") for t in (None, 1)}

    print(f"\nDEC-size encoder ({macs / 1e6:.3f} M multiply-adds/row), k=10, {args.rows:,} MNIST rows, "
          f"median of {args.repeats}; limit = torch.mm 8192^2 at {limit * 2 * macs / 1e9:.0f} GFLOP/s\n")
    print(f"{'path':26} {'batch':>6} {'rows/s':>10} {'x limit':>8} {'x torch best':>13}")
    table = []
    for (name, b), v in med.items():
        row = {"path": name, "batch": b, "rows_per_s": round(v), "of_limit": round(v / limit, 3),
               "vs_torch_best": round(v / torch_best, 2)}
        table.append(row)
        print(f"{name:26} {b or '':>6} {v:>10,.0f} {v / limit:>8.2f} {v / torch_best:>13.2f}")
    for name in ("deepclust fp32", "deepclust int8"):
        vals = [med[(name, b)] for b in BATCHES]
        print(f"{name}: best {max(vals):,.0f} rows/s; worst batch size at {min(vals) / max(vals):.2f} of its best")
    print(f"torch eager + sklearn best at batch {torch_best_batch}: {torch_best:,.0f} rows/s")
    print(f"default precision for this bundle: {default.precision} "
          f"(int8 agreement recorded at export: {bundle.manifest.checks['int8']['label_agreement']:.4%})")
    print(f"int8 vs fp32 labels on all {len(mnist):,} MNIST rows: {agree:.4%} agree")
    unf, fus = med[("ort + faiss (unfused)", 1024)], med[("ort + argmin (fused)", 1024)]
    print(f"ORT + FAISS at {unf / fus:.3f} of ORT + argmin (batch 1024)")
    print(f"\n{'k':>6} {'fused rows/s':>13} {'ort+faiss rows/s':>17} {'faiss/fused':>12}")
    for r in cut:
        print(f"{r['k']:>6} {r['fused_rows_per_s']:>13,} {r['ort_faiss_rows_per_s']:>17,} {r['faiss_over_fused']:>12.3f}")
    print(f"\n{'precision':10} {'batch':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rows in lat.items():
        for r in rows:
            print(f"{name:10} {r['batch']:>6} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")

    print(f"\n{'service (8 threads, 1 row per request)':40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in service.items():
        print(f"{name:40} {r['requests_per_s']:>8,} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")

    record = {
        "benchmark": "throughput", "rows": args.rows, "repeats": args.repeats, "encoder_macs_per_row": macs,
        "limit_rows_per_s": round(limit), "gemm_gflops": round(limit * 2 * macs / 1e9, 1),
        "table": table, "torch_best_batch": torch_best_batch, "int8_agreement_mnist_70000": agree,
        "int8_agreement_recorded": bundle.manifest.checks["int8"], "default_precision": default.precision,
        "ort_faiss_over_fused_1024": round(unf / fus, 3), "cutover": cut, "latency": lat, "service": service,
        "machine": describe(),
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
