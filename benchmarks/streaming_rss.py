"""Peak memory (RSS) of `deepclust assign` on a large .npy, against loading it whole.

Linux carries a child's high-water RSS across fork + exec, so the measuring process must
stay small: the bundle and the input are made in a separate process (`--prepare`), and the
parent's own RSS (the floor of every number) is printed with the results.

Builds a 784-input bundle (the DEC-size dense encoder, briefly trained) and an N-row
MNIST-shaped float32 .npy (MNIST rows tiled when ../shared/data/mnist is there, random
otherwise), then runs each way of scoring in its own process and reads the child's peak
RSS from the kernel (wait4's ru_maxrss). Writes benchmarks/results/streaming_rss.json.

    .venv/bin/python benchmarks/streaming_rss.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
MNIST = HERE.parent.parent / "shared" / "data"


def make_bundle(path: Path) -> None:
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering

    if (MNIST / "mnist").is_dir():
        ds = load_dataset("mnist", data_dir=MNIST, download=False)
        x, pre = ds.x[:10000], ds.preprocessing
    else:
        from deepclust.runtime.preprocessing import Preprocessing

        x, pre = np.random.default_rng(0).integers(0, 256, (10000, 28, 28)).astype(np.uint8), Preprocessing(scale=1 / 255)
    DeepClustering(10, epochs=1, device="cpu").fit(x, preprocessing=pre).save(path, overwrite=True)


def make_input(path: Path, rows: int) -> None:
    """Write the .npy in chunks so that making it does not need the memory it is meant to test."""
    if (MNIST / "mnist").is_dir():
        from deepclust.trainer.datasets import load_dataset

        base = load_dataset("mnist", data_dir=MNIST, download=False).x.reshape(-1, 784).astype(np.float32)
    else:
        base = np.random.default_rng(0).integers(0, 256, (70000, 784)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 784))
    for s in range(0, rows, len(base)):
        n = min(len(base), rows - s)
        out[s:s + n] = base[:n]
        out.flush()
    del out


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024, wall


def parent_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated input file")
    ap.add_argument("--streaming-only", action="store_true",
                    help="measure only deepclust assign (the others need the whole file in RAM: 4M rows = 12 GiB)")
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    bundle, data = WORK / "mnist_bundle", WORK / f"mnist_{args.rows}.npy"
    py = sys.executable
    if args.prepare:
        if not bundle.exists():
            make_bundle(bundle)
        if not data.exists():
            make_input(data, args.rows)
        return
    subprocess.run([py, __file__, "--prepare", "--rows", str(args.rows)], check=True)
    floor = parent_rss_mib()
    cli = [py, "-m", "deepclust.cli"]
    whole = ("import numpy as np, sys; from deepclust.runtime import Assigner; "
             "a = Assigner.load(sys.argv[1]); x = np.load(sys.argv[2]); a.assign(x)")
    mm = ("import numpy as np, sys; from deepclust.runtime import Assigner; a = Assigner.load(sys.argv[1]); "
          "x = np.load(sys.argv[2], mmap_mode='r'); [a.assign(x[s:s + 4096]) for s in range(0, len(x), 4096)]")
    runs = {
        "deepclust assign (streaming)": cli + ["assign", str(bundle), str(data), "-o", str(WORK / "out.parquet"),
                                               "--overwrite", "-q"],
        "np.load whole + Assigner.assign": [py, "-c", whole, str(bundle), str(data)],
        "np.load(mmap_mode='r') + batches": [py, "-c", mm, str(bundle), str(data)],
    }
    if args.streaming_only:
        runs = dict(list(runs.items())[:1])
    results = []
    print(f"{'method':36} {'rows':>10} {'peak RSS MiB':>13} {'seconds':>8} {'rows/s':>9}")
    for name, cmd in runs.items():
        rss, wall = peak_rss(cmd)
        results.append({"method": name, "rows": args.rows, "peak_rss_mib": round(rss, 1), "seconds": round(wall, 2),
                        "rows_per_second": round(args.rows / wall)})
        print(f"{name:36} {args.rows:>10,} {rss:>13,.0f} {wall:>8.1f} {args.rows / wall:>9,.0f}")
    print(f"(floor: this measuring process held {floor:.0f} MiB when it started each child)")
    print(f"deepclust assign scored with {_precision(bundle)} (the bundle's default precision)")
    ref = results[0]["peak_rss_mib"]
    for r in results[1:]:
        print(f"{r['method']}: {r['peak_rss_mib'] / ref:.1f}x the streaming peak")
    record = {"benchmark": "streaming_rss", "input_mib": round(data.stat().st_size / 2**20),
              "measuring_parent_rss_mib": round(floor, 1), "precision": _precision(bundle),
              "machine": describe(),
              "results": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"streaming_rss_{args.rows}.json").write_text(json.dumps(record, indent=2) + "\n")
    if not args.keep:
        data.unlink()


def _precision(bundle: Path) -> str:
    from deepclust.runtime import load_bundle
    from deepclust.runtime.assigner import choose_precision

    return choose_precision(load_bundle(bundle).manifest)


if __name__ == "__main__":
    main()
