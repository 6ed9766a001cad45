"""The ``deepclust`` command: thin — it parses, calls the trainer or the runtime, and prints.

Domain code raises DeepclustError; here it becomes one line on stderr and exit code 1
(a traceback only with ``--debug``). torch is imported only by the commands that train.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from deepclust.runtime.errors import DeepclustError

app = typer.Typer(
    name="deepclust",
    help="Deep clustering you can ship: train a model, export a bundle, score data with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# No markup: what is printed holds paths, column names and error messages, whose brackets are data
# ("data[raw]/x.npy", "deepclust[ray]"); styled words are Text.
out = Console(markup=False)
err = Console(stderr=True, markup=False)
_state = {"debug": False}

# `train --help` and `assign --help` group their options under these headings.
DATA_PANEL = "Data"
OUTPUT_PANEL = "Output"
PRETRAIN_PANEL = "Pretraining"
CLUSTER_PANEL = "Clustering"
SELFLABEL_PANEL = "Self-labelling (--method selflabel)"
FINETUNE_PANEL = "Fine-tuning (--method dec, idec, dcn, dkm)"
SCORING_PANEL = "Scoring"
ENGINE_PANEL = "Engine"

# The recommended options for clothes-like images (README, Results, "At a glance"; tests keep the
# three in step with the quality benchmark's configuration).
FASHION_OPTIONS = ("--pretrain contrastive --hflip --epochs 30 --pretrain-runs 3 --method selflabel "
                   "--student head --teacher-runs 2")
TRAIN_EPILOG = (
    "[bold]Recipes[/bold] (what each reaches and costs: README, Results)\n\n"
    "Images like digits, the default: deepclust train --data mnist --out models/mnist\n\n"
    f"Clothes and photographs: deepclust train --data fashion-mnist --out models/fashion {FASHION_OPTIONS}\n\n"
    "Tables, the default (autoencoder + k-means): deepclust train --data rows.parquet --label-column segment "
    "--k 8 --out models/seg"
)

DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="DEEPCLUST_DATA",
    help="Where named data sets live (and are downloaded to). Default: ~/.cache/deepclust; "
         "/usr/share/datasets/NAME is searched too.", rich_help_panel=DATA_PANEL)]
LabelOption = Annotated[Optional[str], typer.Option(
    "--label-column", help="Tabular data: the column holding ground-truth labels (used for metrics only).",
    rich_help_panel=DATA_PANEL)]
IgnoreOption = Annotated[Optional[list[str]], typer.Option(
    "--ignore-column", help="Tabular data: a column that is not a feature (repeatable).", rich_help_panel=DATA_PANEL)]
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    int8 = "int8"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Architecture(str, Enum):
    dense = "dense"
    conv = "conv"


class Pretraining(str, Enum):
    autoencoder = "autoencoder"
    contrastive = "contrastive"


class Init(str, Enum):
    kmeans = "kmeans"
    gmm = "gmm"


class Views(str, Enum):
    strong = "strong"
    mild = "mild"


class Student(str, Enum):
    auto = "auto"
    encoder = "encoder"
    conv = "conv"
    head = "head"


class Method(str, Enum):
    auto = "auto"
    kmeans = "kmeans"
    gmm = "gmm"
    dec = "dec"
    idec = "idec"
    dcn = "dcn"
    dkm = "dkm"
    selflabel = "selflabel"


DEVICE_HELP = "Where to run: auto (GPU when present), cpu or cuda."
PRECISION_HELP = ("Scoring precision: fp32 (exact), int8 (the bundle's calibrated fast pipeline), or auto: int8 when "
                  "the bundle recorded >= 99.5% label agreement with fp32 on held-out rows, else fp32.")
DeviceOption = Annotated[Device, typer.Option("--device", help=DEVICE_HELP)]
PrecisionOption = Annotated[Precision, typer.Option(help=PRECISION_HELP)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.",
                                          rich_help_panel=OUTPUT_PANEL)]


def _print_error(message: str) -> None:
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def friendly_errors(command):
    """Turn expected errors into one line and exit code 1; keep tracebacks for --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            result = command(*args, **kwargs)
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is handled below
            return result
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # the reader left (`deepclust inspect M --json | head`): stop quietly, as rich does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt as e:  # Ctrl-C: one line, the conventional exit code
            err.print(Text(str(e) or "interrupted", style="yellow"), highlight=False, soft_wrap=True)
            raise typer.Exit(code=130) from None
        except DeepclustError as e:
            if _state["debug"]:
                raise
            _print_error(str(e))
            raise typer.Exit(code=1) from None
        except ImportError as e:
            if _state["debug"]:
                raise
            _print_error(str(e) + _install_hint(e))
            raise typer.Exit(code=1) from None
        except Exception as e:  # an unexpected failure: still one line, traceback on request
            if _state["debug"]:
                raise
            _print_error(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
            raise typer.Exit(code=1) from None

    return wrapper


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log which devices and providers run.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
):
    _state["debug"] = debug
    warnings.showwarning = _show_warning
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s",
                        stream=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (a bundle from a newer deepclust, a library's deprecation) as one line."""
    err.print(Text.assemble(("warning:", "yellow"), " ", str(message)), highlight=False, soft_wrap=True)


# Modules of the `train` extra: a scoring-only install lacks them.
_TRAIN_EXTRA = ("torch", "sklearn", "scipy", "umap", "onnx", "onnxscript", "numba", "pynndescent", "joblib",
                "threadpoolctl")


def _install_hint(e: ImportError) -> str:
    """What to install when a module of an extra is missing (scoring-only installs lack training's)."""
    top = (e.name or "").split(".")[0]
    return " (train, demo and evaluate need: pip install 'deepclust[train]')" if top in _TRAIN_EXTRA else ""


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"deepclust {version('deepclust')}")
        raise typer.Exit()


def _parse_widths(text: str, option: str, example: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise DeepclustError(f"{option}={text!r} should be comma-separated integers, e.g. {example}") from None
    return widths


def _positive(value: float) -> float:
    """--lr's bound, which is open: typer's min= shows and allows the bound itself."""
    if not value > 0:
        raise typer.BadParameter("Input should be greater than 0")
    return value


def _below_one(value: float) -> float:
    """--tol's bounds: 0 allowed, 1 not (typer's max= would show and allow it)."""
    if not 0 <= value < 1:
        raise typer.BadParameter("Input should be greater than or equal to 0 and less than 1")
    return value


def _refuse_existing(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() and not overwrite:
        raise DeepclustError(f"{path}: {what} already exists (pass --overwrite to replace it)")


def _print_scores(title: str, scores: dict) -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    for key in ("acc", "nmi", "ari", "v_measure"):
        if key in scores:
            table.add_column(key.upper() if key != "v_measure" else "V-measure", justify="right")
    table.add_row(*(f"{scores[k]:.4f}" for k in ("acc", "nmi", "ari", "v_measure") if k in scores))
    if table.columns:
        out.print(table)


@app.command(epilog=TRAIN_EPILOG)
@friendly_errors
def train(
    *,  # keyword-only, so that a required option (--out) can sit with its panel among options with defaults
    data: Annotated[str, typer.Option("--data", help="A data set name (mnist, fashion-mnist, kmnist, digits) or a path: "
                                      ".npy/.npz, .parquet, .csv, an IDX file or folder, a folder of .parquet/.csv "
                                      "or .npy parts, an image folder.",
                                      rich_help_panel=DATA_PANEL)],
    k: Annotated[Optional[int], typer.Option("--k", min=2, help="Number of clusters. Default: the number of label "
                                             "classes, when the data has labels.", rich_help_panel=DATA_PANEL)] = None,
    method: Annotated[Method, typer.Option(help="Clustering head. auto (default): selflabel with --augment for image "
                                           "data (the recommended configuration: README, Results), kmeans for "
                                           "tables. kmeans, gmm: k-means or a full-covariance Gaussian mixture on "
                                           "the embedding; dec, idec, dcn and dkm start from k-means (see "
                                           "--init) and fine-tune encoder and centroids (DEC's KL loss; IDEC "
                                           "reconstruction + 0.1 x KL; DCN alternates with mini-batch k-means; "
                                           "DKM uses a softmax-weighted k-means loss); selflabel distils N2D's "
                                           "clusters (UMAP + GMM on the embedding) into a student encoder "
                                           "(--student) and centroids.", rich_help_panel=CLUSTER_PANEL)] = Method.auto,
    student: Annotated[Student, typer.Option(
        help="selflabel: the network that learns the teacher's labels and ships in the bundle. encoder: the "
             "pretrained encoder, fine-tuned; conv: a fresh convolutional encoder (--filters; image data only) "
             "trained from scratch, which generalises past the teacher; head: every pretrained network, frozen, "
             "with a small head trained on their features, which follows the teacher where the others end under "
             "it (Fashion-MNIST's contrastive teachers) and scores at the cost of all --pretrain-runs networks. "
             "auto (default): conv for image data.", rich_help_panel=SELFLABEL_PANEL)]
    = Student.auto,
    teacher_runs: Annotated[int, typer.Option(
        min=1, help="selflabel: UMAP + GMM runs (each with other seeds). More than one teach their consensus "
                    "(k-means on the runs' one-hot labels), which is steadier than one run where UMAP's "
                    "partition moves with its seed (Fashion-MNIST); each run adds a UMAP fit.",
                    rich_help_panel=SELFLABEL_PANEL)] = 1,
    teacher_inits: Annotated[Optional[int], typer.Option(
        min=1, show_default=False,
        help="selflabel: GMM initialisations in each teacher run; the most likely fit teaches. Default: 30 "
             "with --pretrain contrastive, where the likeliest mixture is the better teacher; 1 with the "
             "autoencoder, where it is not (README, Results).", rich_help_panel=SELFLABEL_PANEL)] = None,
    pretrain_runs: Annotated[int, typer.Option(
        min=1, help="selflabel: networks to pretrain, each from its own seed (the first from --seed). The teacher "
                    "runs --teacher-runs times on each network's embedding and teaches the consensus of all; "
                    "networks from other seeds make different mistakes, so it teaches better, at N times the "
                    "pretraining. Only the first network goes on to the student, except with --student head "
                    "(README, Results).", rich_help_panel=SELFLABEL_PANEL)] = 1,
    student_ema: Annotated[float, typer.Option(
        min=0, help="selflabel: ship a moving average of the student's weights and centroids instead of its last "
                    "ones, which move by a few tenths of a point of ACC from epoch to epoch; the average's "
                    "weight halves every this many epochs. 0 (default): the last weights; the average measured "
                    "no better (README, Results).", rich_help_panel=SELFLABEL_PANEL)] = 0.0,
    pretrain: Annotated[Pretraining, typer.Option(
        help="What learns the embedding. autoencoder (default): reconstruction (--architecture). contrastive: image "
             "data only; a small conv encoder learns to embed two random views of an image (zoom, rotation, shift, "
             "contrast, cutout; --hflip) together (SimCLR), for kmeans, gmm and selflabel. On Fashion-MNIST its "
             "selflabel teacher is better than the autoencoder's (README, Results).", rich_help_panel=PRETRAIN_PANEL)]
    = Pretraining.autoencoder,
    hflip: Annotated[bool, typer.Option(help="--pretrain contrastive: also mirror views left-right. Right for "
                                        "clothes and most photographs, wrong for digits and text.",
                                        rich_help_panel=PRETRAIN_PANEL)] = False,
    views: Annotated[Views, typer.Option(
        help="--pretrain contrastive: how far an image's two views differ. strong (default): zoom up to 1.5x, "
             "rotation up to 15 degrees, a 9-pixel cutout. mild: zoom up to 1.2x, rotation up to 8 degrees, no "
             "cutout (README, Results).", rich_help_panel=PRETRAIN_PANEL)] = Views.strong,
    epochs: Annotated[int, typer.Option(min=1, help="Pretraining epochs.", rich_help_panel=PRETRAIN_PANEL)] = 50,
    batch_size: Annotated[int, typer.Option(min=1, help="Pretraining batch size.",
                                            rich_help_panel=PRETRAIN_PANEL)] = 256,
    lr: Annotated[float, typer.Option(callback=_positive, help="Adam learning rate (> 0).",
                                      rich_help_panel=PRETRAIN_PANEL)] = 1e-3,
    latent_dim: Annotated[int, typer.Option(min=1, help="Embedding size.", rich_help_panel=PRETRAIN_PANEL)] = 10,
    architecture: Annotated[Architecture, typer.Option(
        help="Autoencoder: dense (DEC's fully connected one, widths --hidden) or conv (DEC-DA's convolutional one, "
             "channels --filters; image data only: samples of shape HxW, HxWxC or CxHxW).",
             rich_help_panel=PRETRAIN_PANEL)] = Architecture.dense,
    hidden: Annotated[str, typer.Option(help="Dense encoder widths, comma-separated (decoder mirrors them).",
                                        rich_help_panel=PRETRAIN_PANEL)]
    = "500,500,2000",
    filters: Annotated[str, typer.Option(help="Conv encoder channels, comma-separated: one stride-2 convolution each "
                                         "(5x5, the last 3x3), then a linear layer to --latent-dim; the decoder "
                                         "mirrors them.", rich_help_panel=PRETRAIN_PANEL)] = "32,64,128",
    augment: Annotated[Optional[bool], typer.Option(
        help="Image data only: train on randomly warped images (rotation up to 10 degrees, shifts up to 10%, zoom "
             "0.9-1.1). Pretraining reconstructs each warped image; dec/idec/dcn/dkm take targets from clean images "
             "and losses from warped ones (DEC-DA); selflabel's student learns from warped ones (not --student head, "
             "which learns from the networks' features of the images as they are). Default: on with "
             "--method auto on image data, else off.", rich_help_panel=PRETRAIN_PANEL)] = None,
    acai: Annotated[bool, typer.Option(help="Pretrain with ACAI's adversarial regulariser: a critic learns to predict "
                                       "the mixing coefficient of decoded interpolations, the autoencoder to make "
                                       "them look real (Berthelot et al. 2018). The critic is not exported.",
                                       rich_help_panel=PRETRAIN_PANEL)]
    = False,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embedding before clustering (exported with the "
                                            "encoder); k-means then compares directions. dec/idec/dcn/dkm: only "
                                            "their starting partition is found on directions.",
                                            rich_help_panel=CLUSTER_PANEL)] = True,
    n_init: Annotated[int, typer.Option(min=1, help="k-means restarts (best inertia kept).",
                                        rich_help_panel=CLUSTER_PANEL)] = 20,
    init: Annotated[Init, typer.Option(help="dec/idec/dcn/dkm: the partition their centroids start from, k-means "
                                       "(as published) or a Gaussian mixture.",
                                       rich_help_panel=FINETUNE_PANEL)] = Init.kmeans,
    update_interval: Annotated[int, typer.Option(min=1, help="Fine-tuning methods: batches between label checks "
                                                 "(and DEC's target updates).", rich_help_panel=FINETUNE_PANEL)] = 140,
    tol: Annotated[float, typer.Option(callback=_below_one, help="Fine-tuning methods: stop when fewer than this "
                                       "fraction of labels change between checks (>= 0 and < 1).",
                                       rich_help_panel=FINETUNE_PANEL)] = 0.001,
    max_iter: Annotated[int, typer.Option(min=1, help="Fine-tuning methods: most batches.",
                                          rich_help_panel=FINETUNE_PANEL)] = 20_000,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1,
                                      help="Random seed: same seed, same model (on CPU, at one thread count).")] = 0,
    device: DeviceOption = Device.auto,
    data_dir: DataDirOption = None,
    label_column: LabelOption = None,
    ignore_column: IgnoreOption = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Bundle folder to write.", rich_help_panel=OUTPUT_PANEL)],
    int8: Annotated[bool, typer.Option(help="Also export a statically calibrated int8 scoring pipeline (1.5-2x "
                                       "faster than fp32 on CPU in the README's measurements). Its label agreement "
                                       "with fp32 is measured on held-out training rows (under 100 rows: on the "
                                       "calibration rows) and recorded; assign uses it by default only when held-out "
                                       "rows agreed on >= 99.5%. "
                                       "Never with --student head, whose int8 pipeline is the slower one.",
                                       rich_help_panel=OUTPUT_PANEL)]
    = True,
    save_pretrained: Annotated[Optional[list[Path]], typer.Option(
        "--save-pretrained", help="Also save the network as pretraining left it (.npz), to start other fits "
                                  "from with --pretrained. With --pretrain-runs N, give it N times: one file per "
                                  "network, in order.", rich_help_panel=PRETRAIN_PANEL)] = None,
    pretrained: Annotated[Optional[list[Path]], typer.Option(
        "--pretrained", help="Skip pretraining: start from a file written by --save-pretrained with the same data "
                             "and pretraining options (e.g. to try another --method); the result equals a fit from "
                             "scratch. With --pretrain-runs N, give it N times, in order.",
                             rich_help_panel=PRETRAIN_PANEL)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it is a bundle or an empty folder, and "
                                            "--save-pretrained files.", rich_help_panel=OUTPUT_PANEL)] = False,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.",
                                        rich_help_panel=OUTPUT_PANEL)] = False,
):
    """Pretrain an encoder, fit a clustering head, and export a verified model bundle."""
    from deepclust.trainer.checkpoint import check_writable
    from deepclust.runtime.bundle import check_bundle_target

    # Every output is checked here, so that a bad path fails now and not after the training.
    _refuse_existing(out_dir, overwrite, "bundle folder")
    check_bundle_target(out_dir, overwrite=overwrite)
    for path in save_pretrained or ():
        check_writable(path)
        _refuse_existing(path, overwrite, "file")
    if pretrained and save_pretrained:
        raise DeepclustError("--pretrained skips pretraining, so there is nothing for --save-pretrained to save")
    for path in pretrained or ():
        if not path.is_file():
            raise DeepclustError(f"{path}: no such pretrained network file")
    for option, paths in (("--pretrained", pretrained), ("--save-pretrained", save_pretrained)):
        if paths and len(paths) != pretrain_runs:
            raise DeepclustError(f"{option} given {len(paths)} time(s) for --pretrain-runs {pretrain_runs}: give one "
                                 f"file per pretrained network")
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering

    ds = load_dataset(data, data_dir=data_dir, label_column=label_column, ignore_columns=ignore_column or ())
    if k is None:
        if ds.y is None:
            raise DeepclustError(f"{data}: --k is required (the data has no labels to infer it from)")
        k = int(len(set(ds.y.tolist())))
        if k < 2:
            raise DeepclustError(f"{data}: the labels hold one class, and clustering needs k >= 2: pass --k")
    images = len(ds.sample_shape) >= 2
    if method is Method.auto:
        method = Method.selflabel if images else Method.kmeans
        augment = images if augment is None else augment
    if teacher_runs != 1 and method is not Method.selflabel:
        raise DeepclustError("--teacher-runs applies to --method selflabel (or auto on image data) only")
    if teacher_inits is not None and method is not Method.selflabel:
        raise DeepclustError("--teacher-inits applies to --method selflabel (or auto on image data) only")
    if pretrain_runs != 1 and method is not Method.selflabel:
        raise DeepclustError("--pretrain-runs applies to --method selflabel (or auto on image data) only")
    if student_ema and method is not Method.selflabel:
        raise DeepclustError("--student-ema applies to --method selflabel (or auto on image data) only")
    if student is not Student.auto and method is not Method.selflabel:
        raise DeepclustError(f"--student {student.value} applies to --method selflabel (or auto on image data) only")
    model = DeepClustering(k, method=method.value, student=student.value, teacher_runs=teacher_runs,
                           teacher_inits=teacher_inits, pretrain_runs=pretrain_runs, student_ema=student_ema,
                           pretraining=pretrain.value, hflip=hflip, views=views.value,
                           latent_dim=latent_dim, architecture=architecture.value,
                           hidden=_parse_widths(hidden, "--hidden", "500,500,2000"),
                           filters=_parse_widths(filters, "--filters", "32,64,128"), augment=bool(augment), acai=acai,
                           epochs=epochs, batch_size=batch_size, lr=lr, normalize=normalize, n_init=n_init,
                           init=init.value, update_interval=update_interval, tol=tol, max_iter=max_iter, seed=seed,
                           device=device.value, verbose=not (quiet or as_json))
    model.fit(ds.x, ds.y, preprocessing=ds.preprocessing, feature_names=ds.feature_names, pretrained=pretrained or None,
              save_pretrained_to=save_pretrained or None)
    t0 = time.perf_counter()
    path = model.save(out_dir, overwrite=overwrite, int8=int8)
    timings = {**model.timings_, "export_seconds": time.perf_counter() - t0}
    from deepclust.runtime.bundle import load_bundle

    checks = load_bundle(path).manifest.checks
    if as_json:
        print(json.dumps({"bundle": str(path), "data": data, "k": k, "method": method.value, "device": model.device_,
                          "metrics": model.metrics_, "timings": timings, "checks": checks,
                          "fine_tune": getattr(model, "fine_tune_", None)}))
        return
    _print_scores(f"{data}: {model.metrics_['n_samples']} rows, k={k}, {method.value}", model.metrics_)
    source = f"from {', '.join(map(str, pretrained))}" if pretrained else f"on {model.device_}"
    per_epoch = timings['pretrain_seconds'] / (epochs * pretrain_runs)
    out.print(f"pretrain {timings['pretrain_seconds']:.1f}s ({per_epoch:.2f}s/epoch "
              f"{source}), cluster {timings['cluster_seconds']:.1f}s, export {timings['export_seconds']:.1f}s; "
              f"runtime parity: labels agree on {checks['label_agreement']:.2%} of {checks['parity_rows']} rows")
    if "int8" in checks:
        rows = "held-out" if checks["int8"]["held_out"] else "calibration"  # too few rows to hold any out
        out.print(f"int8 pipeline: labels agree with fp32 on {checks['int8']['label_agreement']:.2%} of "
                  f"{checks['int8']['rows']} {rows} rows")
    elif int8 and student is Student.head:
        out.print("int8 pipeline: not exported; the head student scores slower in int8 than in fp32")
    out.print(f"bundle written to {path}")


@app.command()
@friendly_errors
def assign(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model bundle folder.")],
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT", help="Rows to score: .npy, .parquet, .csv or IDX files, folders of them (read in name "
                              "order), or a folder of PNG/JPEG images.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Result file: .parquet, .npy or .csv (with "
                                         "--engine ray: a folder of Parquet files).", rich_help_panel=OUTPUT_PANEL)],
    soft: Annotated[bool, typer.Option(help="Also write soft assignments (k probabilities per row: a GMM "
                                       "bundle's posterior, else DEC's Student-t kernel over squared distances, "
                                       "which is flat where the embedding is L2-normalised (k-means bundles' "
                                       "by default): rank rows by distance there).",
                                     rich_help_panel=OUTPUT_PANEL)] = False,
    embeddings: Annotated[bool, typer.Option(help="Also write the embedding of each row.",
                                           rich_help_panel=OUTPUT_PANEL)] = False,
    keep_column: Annotated[Optional[list[str]], typer.Option(
        "--keep-column", metavar="NAME", help="Copy this column of the input (an id) into the output, first, to join "
                                              "the results back by (.parquet/.csv inputs and outputs). Repeat it for "
                                              "more columns (a key of several), kept in that order.",
        rich_help_panel=OUTPUT_PANEL)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows read per batch (bounds memory; the encoder runs in "
                                            "calls of its own best size).", rich_help_panel=SCORING_PANEL)] = 4096,
    device: Annotated[Device, typer.Option(
        "--device", help=DEVICE_HELP, rich_help_panel=SCORING_PANEL)] = Device.auto,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP, rich_help_panel=SCORING_PANEL)] = Precision.auto,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run of the same job from its last finished "
                                         "chunk (--no-resume starts afresh).", rich_help_panel=OUTPUT_PANEL)] = True,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per resumable chunk (with --engine ray: per Ray "
                                            "task), rounded up to whole encoder calls of 1,024 rows. Results do "
                                            "not depend on it or on --batch-size.",
                                            rich_help_panel=OUTPUT_PANEL)] = 65_536,
    engine: Annotated[Engine, typer.Option(help="local: this process. ray: Ray Data map_batches over Parquet "
                                           "inputs, on the cluster at RAY_ADDRESS or a local Ray, into a folder of "
                                           "Parquet files, identical to the local engine's output (needs pip install "
                                           "'deepclust\\[ray]'; Ray retries failed tasks itself, so --resume does not "
                                           "apply).", rich_help_panel=ENGINE_PANEL)] = Engine.local,
    actors: Annotated[Optional[int], typer.Option(min=1, help="--engine ray: scoring actors (each loads the bundle "
                                                  "once). Default: Ray's autoscaling pool.",
                                                  rich_help_panel=ENGINE_PANEL)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.",
                                          rich_help_panel=OUTPUT_PANEL)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Score INPUT with a bundle: label and squared distance per row, streamed, any input size.

    The output appears only when every row is scored; on bad input nothing is left behind.
    An interrupted run (Ctrl-C, kill) keeps its finished chunks.
    Run the same command again and it continues where it stopped, producing the same file as an uninterrupted run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from deepclust.runtime import Assigner, score_file

    if engine is Engine.ray:
        from deepclust.runtime.ray_engine import score_parquet_with_ray

        report = score_parquet_with_ray(model, inputs, output, soft=soft, embeddings=embeddings, overwrite=overwrite,
                                        batch_size=batch_size, chunk_rows=chunk_rows, concurrency=actors,
                                        device=device.value, precision=precision.value, keep_columns=keep_column or ())
    else:
        assigner = Assigner.load(model, device=device.value, precision=precision.value)
        with Progress(TextColumn("[bold]assign"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                      TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal) as progress:
            task = progress.add_task("assign", total=None)
            report = score_file(assigner, inputs, output, soft=soft, embeddings=embeddings, overwrite=overwrite,
                                batch_rows=batch_size, chunk_rows=chunk_rows, resume=resume,
                                keep_columns=keep_column or (),
                                on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    resumed = getattr(report, "resumed_rows", 0)
    if resumed == report.rows:  # every chunk was scored before: this run only assembled the output
        speed = "all resumed"
    else:
        speed = f"{report.rows_per_second:,.0f} rows/s" + (f", resumed after {resumed}" if resumed else "")
    out.print(f"scored {report.rows} rows in {report.seconds:.2f}s ({speed}) -> {report.output}", highlight=False,
              soft_wrap=True)


@app.command()
@friendly_errors
def evaluate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model bundle folder.")],
    data: Annotated[str, typer.Argument(metavar="DATA",
                                        help="Labelled data: a data set name or a path (see train --help).")],
    data_dir: DataDirOption = None,
    label_column: LabelOption = None,
    ignore_column: IgnoreOption = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    as_json: JsonOption = False,
):
    """Score labelled DATA with a bundle and report ACC, NMI, ARI and V-measure.

    Needs scikit-learn and scipy (pip install 'deepclust\\[train]'); torch is not used.
    """
    import numpy as np

    from deepclust.runtime import Assigner
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.metrics import clustering_scores

    assigner = Assigner.load(model, device=device.value, precision=precision.value)
    ds = load_dataset(data, data_dir=data_dir, label_column=label_column, ignore_columns=ignore_column or (),
                      feature_names=assigner.manifest.input.feature_names)
    if ds.y is None:
        raise DeepclustError(f"{data}: has no labels to evaluate against (labels come from a table's --label-column, "
                             "an .npz's y, an IDX folder's label files or an image folder's class sub-folders)")
    if int(np.prod(ds.x.shape[1:])) != assigner.manifest.input.n_features:
        raise DeepclustError(assigner.shape_error(data, ds.x.shape[1:]))
    labels = np.concatenate([assigner.assign(ds.x[s:s + 65536]).labels for s in range(0, len(ds.x), 65536)])
    scores = {"n_samples": int(len(labels)), **clustering_scores(ds.y, labels)}
    # auto may pick the int8 pipeline, whose labels can differ from train's (fp32) on a few rows
    if as_json:
        print(json.dumps({"bundle": str(model), "data": data, "precision": assigner.precision, "metrics": scores}))
        return
    _print_scores(f"{data}: {len(labels)} rows scored by {model} ({assigner.precision})", scores)


@app.command()
@friendly_errors
def inspect(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Model bundle folder.")],
    as_json: JsonOption = False,
):
    """Verify a bundle (checksums, manifest fields, its ONNX graphs against the manifest) and show
    what it holds."""
    from deepclust.runtime.bundle import load_bundle
    from deepclust.runtime.graph_check import check_graphs

    bundle = load_bundle(model)
    check_graphs(bundle)
    m = bundle.manifest
    if as_json:
        print(json.dumps(json.loads(m.to_json())))
        return
    table = Table(title=f"{model} (format {m.format_version}, checksums and graphs verified)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    shape = "x".join(str(s) for s in m.input.sample_shape)
    table.add_row("input", f"{m.input.n_features} values per row (sample shape {shape}, trained on {m.input.dtype})"
                  + (f", columns {', '.join(m.input.feature_names[:6])}..." if m.input.feature_names else ""))
    pre = m.preprocessing.to_dict()
    table.add_row("preprocessing", "(x - offset) * scale, " + (
        "per feature" if isinstance(pre["scale"], list) else f"offset {pre['offset']}, scale {pre['scale']:.6g}"))
    table.add_row("method", f"{m.method.get('name')}  " + ", ".join(f"{k}={v}" for k, v in m.method.get("params", {}).items()))
    table.add_row("clusters", f"k={m.k}, latent_dim={m.latent_dim}, assignment by {m.assignment.replace('_', ' ')}")
    if m.metrics:
        table.add_row("training metrics", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in m.metrics.items()))
    if m.checks:
        table.add_row("export checks", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in m.checks.items()))
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    for name, digest in m.files.items():
        table.add_row(name, f"sha256 {digest[:16]}...")
    out.print(table)


@app.command()
@friendly_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Working folder for the bundle and the scored file; "
                                          "a rerun replaces what an earlier one left there.")]
    = Path("build/demo"),
    epochs: Annotated[int, typer.Option(min=1, help="Pretraining epochs.")] = 50,
    rows: Annotated[int, typer.Option(min=1, help="Rows to score for the throughput figure.")] = 200_000,
):
    """Train on scikit-learn's digits, export a bundle, score with the runtime, print the numbers."""
    import numpy as np

    from deepclust.runtime import Assigner, score_file
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering
    from deepclust.trainer.metrics import clustering_scores

    if out_dir.exists() and not out_dir.is_dir():
        raise DeepclustError(f"{out_dir}: is a file; --out is the demo's working folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits")
    err.print(Text.assemble(("1/3", "bold"), f" training on digits ({len(ds.x)} images 8x8, k=10)"))
    t0 = time.perf_counter()
    model = DeepClustering(10, epochs=epochs, verbose=True).fit(ds.x, ds.y, preprocessing=ds.preprocessing)
    bundle = model.save(out_dir / "bundle", overwrite=True)
    train_s = time.perf_counter() - t0

    err.print(Text.assemble(("2/3", "bold"), f" scoring digits with the runtime (onnxruntime + FAISS) from {bundle}"))
    assigner = Assigner.load(bundle)
    runtime_scores = clustering_scores(ds.y, assigner.assign(ds.x).labels)

    big = out_dir / "rows.npy"  # one name whatever --rows is: reruns replace it, not add to it
    reps = -(-rows // len(ds.x))
    np.save(big, np.tile(ds.x.reshape(len(ds.x), -1), (reps, 1))[:rows])
    err.print(Text.assemble(("3/3", "bold"), f" streaming {rows} rows from {big}"))
    report = score_file(assigner, big, out_dir / "assignments.parquet", overwrite=True)

    table = Table(title="deepclust demo: digits, autoencoder + k-means", header_style="bold")
    for col in ("", "ACC", "NMI", "ARI", "V-measure"):
        table.add_column(col, justify="right")
    for name, s in (("trainer (torch)", model.metrics_), ("runtime (ONNX)", runtime_scores)):
        table.add_row(name, *(f"{s[k]:.4f}" for k in ("acc", "nmi", "ari", "v_measure")))
    out.print(table)
    out.print(Text.assemble(f"training + export: {train_s:.1f}s; scoring: {report.rows:,} rows in "
                            f"{report.seconds:.2f}s = ",
                            (f"{report.rows_per_second:,.0f} rows/s", "bold"),
                            f" on {assigner.providers[0]} -> {report.output}"), highlight=False)


# The group's options, which users also write after the command (`deepclust assign ... --debug`).
_GROUP_FLAGS = ("--debug", "--verbose", "-v")


def group_flags_first(args: list[str]) -> list[str]:
    """``args`` with the group's flags moved before the command, where Click reads them; a
    ``--`` ends the options, so what follows it is left alone."""
    cut = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:cut] if a in _GROUP_FLAGS]
    return flags + [a for a in args[:cut] if a not in _GROUP_FLAGS] + args[cut:]


def main() -> None:
    app(args=group_flags_first(sys.argv[1:]))


if __name__ == "__main__":
    main()
