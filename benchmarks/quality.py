"""Clustering quality of named configurations × data sets × seeds, and the table of them.

    .venv/bin/python benchmarks/quality.py run --configs dec-da --data mnist --seeds 0 1 2 --data-dir ../shared/data
    .venv/bin/python benchmarks/quality.py table          # rewrites results/quality.md from results/quality.jsonl

Each run is `deepclust train --data DATA --seed S --json` plus the configuration's options,
in its own process; one JSON record per run (configuration, options, data set, n, seed, ACC,
NMI, ARI, seconds per phase, device, versions, machine) is appended to
benchmarks/results/quality.jsonl. `table` groups the records by configuration and data set
(mean ± std over seeds). Any row is reproduced by the command stored in its records, with
the defaults that changed since it ran spelled out as the table's options show them.

Configurations that differ only in their clustering options (ae+kmeans, ae+gmm, dec, idec,
dcn, dkm) pretrain the same autoencoder, so the first of them saves it (`--save-pretrained`,
under benchmarks/work/pretrained/) and the others start from it (`--pretrained`). That gives
the same model as pretraining again (tests/trainer/test_checkpoint.py) at a fraction of the
time; records keep the pretraining seconds it took once. `--no-share-pretraining` turns it off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from deepclust.trainer.seeds import run_seed
from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quality.jsonl"
# `deepclust train` options that act after pretraining (with how many values each takes):
# runs that differ only in these can share one pretrained autoencoder.
CLUSTERING_OPTIONS = {"--method": 1, "--student": 1, "--teacher-runs": 1, "--teacher-inits": 1, "--student-ema": 1,
                      "--n-init": 1, "--init": 1, "--update-interval": 1, "--tol": 1, "--max-iter": 1,
                      "--normalize": 0, "--no-normalize": 0, "--int8": 0, "--no-int8": 0}

# Configuration name -> `deepclust train` options (on top of the CLI defaults), and the
# published ACC to compare with, per data set, where there is one.
CONFIGS: dict[str, tuple[list[str], dict[str, float], str]] = {
    "ae+kmeans": (["--method", "kmeans"], {"mnist": 0.818}, "IDEC paper's AE + k-means"),
    "ae+gmm": (["--method", "gmm"], {}, ""),
    "dec": (["--method", "dec"], {"mnist": 0.843}, "Xie 2016"),
    "idec": (["--method", "idec"], {"mnist": 0.881}, "Guo 2017"),
    # The IDEC paper pretrains its autoencoder for 200 epochs; the CLI default (and "idec") is 50.
    "idec-200": (["--method", "idec", "--epochs", "200"], {"mnist": 0.881}, "Guo 2017, its 200 pretraining epochs"),
    "idec-200-gmminit": (["--method", "idec", "--init", "gmm", "--epochs", "200"], {"mnist": 0.881},
                         "Guo 2017, 200 pretraining epochs (k-means start)"),
    "ae+kmeans-200": (["--method", "kmeans", "--epochs", "200"], {"mnist": 0.818},
                      "IDEC paper's AE + k-means, 200 epochs"),
    "dcn": (["--method", "dcn"], {"mnist": 0.83}, "Yang 2017"),
    "dkm": (["--method", "dkm"], {"mnist": 0.84}, "Fard 2020"),
    "dec-gmminit": (["--method", "dec", "--init", "gmm"], {"mnist": 0.843}, "Xie 2016 (k-means start)"),
    "idec-gmminit": (["--method", "idec", "--init", "gmm"], {"mnist": 0.881}, "Guo 2017 (k-means start)"),
    "acai+kmeans": (["--acai", "--method", "kmeans"], {"mnist": 0.962}, "Berthelot 2018"),
    # ACAI as the paper ran it: a convolutional autoencoder with a 256-d latent code.
    "conv-acai+kmeans": (["--architecture", "conv", "--latent-dim", "256", "--acai", "--method", "kmeans"],
                         {"mnist": 0.962}, "Berthelot 2018, its conv AE and 256-d latent"),
    "acai+selflabel-da": (["--acai", "--augment", "--method", "selflabel"], {}, ""),
    "dec-da": (["--augment", "--method", "dec"], {"mnist": 0.985, "fashion-mnist": 0.586}, "Guo 2018, DEC-DA"),
    "idec-da": (["--augment", "--method", "idec"], {}, ""),
    # selflabel's student: the pretrained dense encoder fine-tuned (the default until the conv
    # student), or a fresh convolutional encoder (the default for images since).
    "selflabel-da": (["--augment", "--method", "selflabel", "--student", "encoder"],
                     {"mnist": 0.979, "fashion-mnist": 0.672}, "N2D, McConville 2019 (not exportable)"),
    "selflabel-convstudent-da": (["--augment", "--method", "selflabel", "--student", "conv"],
                                 {"mnist": 0.985, "fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # SimCLR pretraining (with mirrored views: Fashion-MNIST is clothes) teaches the conv student.
    "contrastive-hflip-selflabel-da": (["--pretrain", "contrastive", "--hflip", "--epochs", "30", "--augment",
                                        "--method", "selflabel", "--student", "conv"],
                                       {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... taught by the consensus of five UMAP + GMM runs (same pretraining as the one above).
    "contrastive-hflip-selflabel5-da": (["--pretrain", "contrastive", "--hflip", "--epochs", "30", "--augment",
                                         "--method", "selflabel", "--student", "conv", "--teacher-runs", "5"],
                                        {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... taught by three contrastive networks (seeds drawn from the run's), two UMAP + GMM runs on each.
    "contrastive3-hflip-selflabel2-da": (["--pretrain", "contrastive", "--hflip", "--epochs", "30", "--pretrain-runs",
                                          "3", "--augment", "--method", "selflabel", "--student", "conv",
                                          "--teacher-runs", "2"],
                                         {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... the three networks trained on milder views (no cutout, zoom up to 1.2x, rotation up to 8 degrees).
    "contrastive3-mild-hflip-selflabel2-da": (["--pretrain", "contrastive", "--hflip", "--views", "mild", "--epochs",
                                               "30", "--pretrain-runs", "3", "--augment", "--method", "selflabel",
                                               "--student", "conv", "--teacher-runs", "2"],
                                              {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... six such networks: pooled, their partitions teach better than three (experiments in FINDINGS.md).
    "contrastive6-mild-hflip-selflabel2-da": (["--pretrain", "contrastive", "--hflip", "--views", "mild", "--epochs",
                                               "30", "--pretrain-runs", "6", "--augment", "--method", "selflabel",
                                               "--student", "conv", "--teacher-runs", "2"],
                                              {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... the three networks frozen, a head on their features as the student (selflabel.FeatureHead).
    "contrastive3-hflip-selflabel2-head": (["--pretrain", "contrastive", "--hflip", "--epochs", "30", "--pretrain-runs",
                                            "3", "--method", "selflabel", "--student", "head", "--teacher-runs", "2"],
                                           {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... the same without mirrored views, for digits (MNIST).
    "contrastive3-selflabel2-head": (["--pretrain", "contrastive", "--epochs", "30", "--pretrain-runs", "3",
                                      "--method", "selflabel", "--student", "head", "--teacher-runs", "2"],
                                     {"mnist": 0.985, "fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    # ... each shipping a moving average of its student (half-life 2.5 epochs) instead of the last weights.
    "selflabel-convstudent-ema-da": (["--augment", "--method", "selflabel", "--student", "conv", "--student-ema",
                                      "2.5"], {"mnist": 0.985, "fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    "contrastive3-hflip-selflabel2-ema-da": (["--pretrain", "contrastive", "--hflip", "--epochs", "30",
                                              "--pretrain-runs", "3", "--augment", "--method", "selflabel", "--student",
                                              "conv", "--teacher-runs", "2", "--student-ema", "2.5"],
                                             {"fashion-mnist": 0.68}, "the issue's target (DEC-DA, N2D)"),
    "conv-dec-da": (["--architecture", "conv", "--augment", "--method", "dec"],
                    {"mnist": 0.985, "fashion-mnist": 0.586}, "Guo 2018, ConvDEC-DA"),
}


def run(args) -> None:
    results, pretrained_dir = Path(args.results), Path(args.work) / "pretrained"
    results.parent.mkdir(parents=True, exist_ok=True)
    for data in args.data:
        for seed in args.seeds:
            for name in args.configs:
                options = CONFIGS[name][0] + args.extra
                cmd = ["deepclust", "train", "--data", data, "--out", "BUNDLE", "--seed", str(seed), "--json",
                       *options]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                argv = [sys.executable, "-m", "deepclust.cli", *cmd[1:]]
                shared = None
                if args.share_pretraining:
                    # One file per pretrained network; a --pretrain-runs fit's networks are those
                    # fits with their seeds pretrain, so the first is shared with one-network configs.
                    runs, alone = _pretrain_runs(options)
                    shared = [pretrained_dir / f"{_pretraining_key(data, run_seed(seed, i), alone)}.npz"
                              for i in range(runs)]
                    if runs > 1:
                        for i, path in enumerate(shared):
                            if not path.exists():
                                _pretrain_alone(data, run_seed(seed, i), alone, path, args.data_dir)
                    flag = "--pretrained" if all(path.exists() for path in shared) else "--save-pretrained"
                    for path in shared:
                        argv += [flag, str(path)]
                with tempfile.TemporaryDirectory() as tmp:
                    argv[argv.index("BUNDLE")] = f"{tmp}/b"
                    proc = subprocess.run(argv, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
                record = json.loads(proc.stdout)
                record.pop("bundle", None)
                record.update(config=name, options=options, seed=seed, command=" ".join(cmd), machine=describe(),
                              pretraining_shared=bool(shared and "--pretrained" in argv))
                with results.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                m, t = record["metrics"], record["timings"]
                print(f"{data} {name} seed {seed}: ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f} | "
                      f"pretrain {t['pretrain_seconds']:.0f}s cluster {t['cluster_seconds']:.0f}s", flush=True)
    table(args)


def _pretraining_options(options: list[str]) -> list[str]:
    """The options that decide the pretrained network (the clustering options removed).

    `--method auto` (also the default) is kept: it turns augmentation on for images, so it
    changes an autoencoder's pretraining. A contrastive network's is not: `--augment` only
    warps the student's images there, so it is dropped."""
    if "--method" not in options:
        options = ["--method", "auto", *options]
    kept, i = [], 0
    while i < len(options):
        if options[i] in CLUSTERING_OPTIONS and options[i:i + 2] != ["--method", "auto"]:
            i += 1 + CLUSTERING_OPTIONS[options[i]]
        else:
            kept.append(options[i])
            i += 1
    if "contrastive" in kept and kept[kept.index("contrastive") - 1] == "--pretrain":
        kept = [option for option in kept if option != "--augment"]
    return kept


def _pretrain_runs(options: list[str]) -> tuple[int, list[str]]:
    """(`--pretrain-runs`' value, the options without it): each network is pretrained as a fit
    with those options and its own seed would be."""
    if "--pretrain-runs" not in options:
        return 1, options
    i = options.index("--pretrain-runs")
    return int(options[i + 1]), options[:i] + options[i + 2:]


def _pretrain_alone(data: str, seed: int, options: list[str], path: Path, data_dir: str | None) -> None:
    """Write the pretrained network of a fit with ``options`` and ``seed`` to ``path`` (its
    k-means head and bundle are thrown away): one network of a --pretrain-runs fit."""
    kept = _pretraining_options(options)
    if kept[:2] == ["--method", "auto"]:  # auto's augmentation would differ under --method kmeans
        raise SystemExit("a configuration with --pretrain-runs must name its --method")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "deepclust.cli", "train", "--data", data, "--out", f"{tmp}/b", "--seed",
                str(seed), *kept, "--method", "kmeans", "--no-int8", "--json", "--save-pretrained", str(path),
                *(["--data-dir", data_dir] if data_dir else [])]
        proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
    print(f"{data}: pretrained the network of seed {seed} to {path}", flush=True)


def _pretraining_key(data: str, seed: int, options: list[str]) -> str:
    """A name for the pretrained network these options lead to (the clustering options removed)."""
    kept = _pretraining_options(options)
    digest = hashlib.sha256(json.dumps([data, seed, kept]).encode()).hexdigest()[:16]
    return f"{data}-seed{seed}-{digest}"


def table(args) -> None:
    results = Path(args.results)
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict = {}
    for r in records:
        # Runs on different machines are not pooled: their float paths (and times) differ; nor
        # are runs whose options differ, defaults included (a default changed since).
        groups.setdefault((r["data"], _config_name(r), _machine_name(r), tuple(_options(r))), []).append(r)
    header = ["data", "configuration", "options", "machine", "seeds", "ACC", "NMI", "ARI", "pretrain s", "cluster s",
              "paper ACC"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (data, name, machine, options), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        papers, source = CONFIGS.get(rs[0]["config"], ([], {}, ""))[1:]
        paper = papers.get(data)
        cells = [data, name, " ".join(options), machine, ", ".join(str(r["seed"]) for r in rs)]
        for key in ("acc", "nmi", "ari"):
            vals = [r["metrics"][key] for r in rs]
            cells.append(f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}" if len(vals) > 1
                         else f"{vals[0]:.4f}")
        for key in ("pretrain_seconds", "cluster_seconds"):
            cells.append(f"{statistics.mean(r['timings'][key] for r in rs):.0f}")
        cells.append(f"{paper} ({source})" if paper else "")
        lines.append("| " + " | ".join(cells) + " |")
    text = ("Generated by `benchmarks/quality.py table` from `quality.jsonl` (mean ± std over the seeds listed); "
            "each record holds the command that reproduces it.\n\n" + "\n".join(lines) + "\n")
    results.with_suffix(".md").write_text(text)
    print(text)


def _options(record: dict) -> list[str]:
    """The record's options, with the defaults that have changed since some runs made explicit."""
    options, fine_tune = record["options"], record.get("fine_tune") or {}
    if "--method" not in options:  # the default method has changed over time; say which one ran
        options = ["--method", record["method"], *options]
    if record["method"] == "selflabel":
        if "--student" not in options:  # so has selflabel's student
            options = [*options, "--student", fine_tune.get("student", "encoder")]
        if "--teacher-inits" not in options:  # and its teacher's GMM fits (1, now 30 after contrastive)
            options = [*options, "--teacher-inits", str(fine_tune.get("teacher_inits", 1))]
    return options


def _config_name(record: dict) -> str:
    """The configuration's name; for a consensus teacher (several runs or networks) recorded
    before fits said its k-means starts, the 10 it then had (now ``selflabel.CONSENSUS_INITS``),
    so that those runs are not pooled with later ones."""
    fine_tune = record.get("fine_tune") or {}
    if "teacher_runs" in fine_tune and "consensus_inits" not in fine_tune:
        return f"{record['config']} (consensus of 10 k-means starts)"
    return record["config"]


def _machine_name(record: dict) -> str:
    m = record["machine"]
    return f"{m['processor']}, {m['cpus']} CPUs, {record.get('device', '?')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and record")
    r.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["ae+kmeans"])
    r.add_argument("--data", nargs="+", default=["mnist"], help="data set names (mnist, fashion-mnist, digits)")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--data-dir", default=None)
    r.add_argument("--no-share-pretraining", dest="share_pretraining", action="store_false",
                   help="pretrain anew for every run, even where the pretraining options are the same")
    r.add_argument("extra", nargs="*", help="more `deepclust train` options for every run, after --")
    t = sub.add_parser("table", help="rewrite results/quality.md")
    for p in (r, t):
        p.add_argument("--results", default=str(RESULTS), help="records file (the table goes beside it, .md)")
    r.add_argument("--work", default=str(HERE / "work"), help="where shared pretrained autoencoders are kept")
    args = ap.parse_args()
    {"run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
