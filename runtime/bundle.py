"""The model bundle: the contract between the trainer and the runtime, defined once here.

A bundle is a folder of data only (no pickles, no class names to import)::

    manifest.json   format version, input spec, preprocessing, method, metrics, versions,
                    the sha256 of every other file, and its own (of its other fields)
    encoder.onnx    raw-but-preprocessed input (n, n_features) -> embedding (n, latent_dim)
    centroids.npy   float32 (k, latent_dim)
    ...             optional files named in the manifest (e.g. GMM parameters)

Loading verifies the format version, the manifest's fields and every checksum, and refuses a
bundle that does not match with a message naming the file and the reason. The ONNX graphs are
checked against the manifest by :mod:`.graph_check`, when their sessions are made.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import BundleError
from .preprocessing import Preprocessing

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The manifest's checksum of its own other fields: an edited preprocessing scale or k would
# change every result as silently as an altered encoder. Required: a manifest without it could
# be edited at will.
MANIFEST_SHA256 = "manifest_sha256"
ENCODER = "encoder.onnx"
CENTROIDS = "centroids.npy"
# Optional fused graphs (preprocessing + encoder + nearest centroid), exact and int8.
PIPELINE = "pipeline.onnx"
PIPELINE_INT8 = "pipeline.int8.onnx"
PIPELINE_INPUT = "x"
PIPELINE_OUTPUTS = ("label", "distance", "distances", "z")
# Assignment rules the runtime implements; the trainer picks one per method.
NEAREST_CENTROID = "nearest_centroid"
GAUSSIAN_MIXTURE = "gaussian_mixture"
GMM_WEIGHTS = "gmm_weights.npy"
GMM_PRECISIONS_CHOLESKY = "gmm_precisions_cholesky.npy"


@dataclass(frozen=True)
class InputSpec:
    """What one raw input row looks like.

    ``sample_shape`` is the shape of one sample as the trainer read it ((28, 28) for an
    MNIST image, (64,) for a 64-column table); the runtime accepts any array whose rows
    hold that many values. ``feature_names`` is set for tabular data: readers then select
    those columns by name, in that order.
    """

    sample_shape: tuple[int, ...]
    dtype: str = "float32"
    feature_names: tuple[str, ...] | None = None

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    def to_dict(self) -> dict:
        d = {"sample_shape": list(self.sample_shape), "n_features": self.n_features, "dtype": self.dtype}
        if self.feature_names is not None:
            d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        """Read the manifest's ``input``; ValueError names a field of the wrong type."""
        dims = _field(d, "sample_shape", list, "input.")
        if not dims:
            raise ValueError("input.sample_shape: [] holds no dimensions")
        spec = cls(sample_shape=tuple(_check(s, int, f"input.sample_shape[{i}]") for i, s in enumerate(dims)),
                   dtype=_field(d, "dtype", str, "input.", "float32"))
        if _field(d, "n_features", int, "input.", spec.n_features) != spec.n_features:
            raise ValueError(f"input.n_features: {d['n_features']}, but sample_shape {_show(dims)} holds "
                             f"{spec.n_features} values")
        names = _field(d, "feature_names", list, "input.", None)
        if names is not None:
            if len(names) != spec.n_features:
                raise ValueError(f"input.feature_names: {len(names)} names for {spec.n_features} features")
            spec = cls(spec.sample_shape, spec.dtype,
                       tuple(_check(n, str, f"input.feature_names[{i}]") for i, n in enumerate(names)))
        return spec


@dataclass
class Manifest:
    input: InputSpec
    preprocessing: Preprocessing
    latent_dim: int
    k: int
    method: dict
    assignment: str = NEAREST_CENTROID
    metrics: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = asdict(self)
        d["input"] = self.input.to_dict()
        d["preprocessing"] = self.preprocessing.to_dict()
        ordered = {"format_version": d.pop("format_version"), **d}
        ordered[MANIFEST_SHA256] = manifest_sha256(ordered)
        return json.dumps(ordered, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """Read a manifest's fields, strictly: ValueError names the first of the wrong type, since
        a coerced one ("88" as sample shape (8, 8), k 10.9 as 10) would score wrongly, not fail."""
        spec = InputSpec.from_dict(_field(d, "input", dict))
        pre = _field(d, "preprocessing", dict, "", {})
        if _field(pre, "kind", str, "preprocessing.", "affine") != "affine":
            raise ValueError(f"preprocessing.kind: {_show(pre['kind'])} is not \"affine\"")
        for name in ("offset", "scale"):  # a number, or one per feature
            value = pre.get(name, 0.0)
            if not isinstance(value, list):
                _check(value, float, f"preprocessing.{name}")
            elif len(value) != spec.n_features:
                raise ValueError(f"preprocessing.{name}: {len(value)} values for {spec.n_features} features")
            else:
                for i, v in enumerate(value):
                    _check(v, float, f"preprocessing.{name}[{i}]")
        method = _field(d, "method", dict, "", {})
        _field(method, "params", dict, "method.", None)
        checks = _field(d, "checks", dict, "", {})
        int8 = _field(checks, "int8", dict, "checks.", {})  # read by choose_precision
        _field(int8, "label_agreement", float, "checks.int8.", None)
        _field(int8, "held_out", bool, "checks.int8.", None)
        versions = _field(d, "versions", dict, "", {})
        for name, v in versions.items():
            _check(v, str, f"versions.{name}")
        files = _field(d, "files", dict)
        for name, digest in files.items():
            if not is_bundle_file_name(name):
                raise ValueError(f"files: {json.dumps(name)} is not a plain file name in the bundle folder")
            _check(digest, str, f"files.{json.dumps(name)}")
        return cls(
            input=spec,
            preprocessing=Preprocessing.from_dict(pre),
            latent_dim=_field(d, "latent_dim", int),
            k=_field(d, "k", int),
            method=dict(method),
            assignment=_field(d, "assignment", str, "", NEAREST_CENTROID),
            metrics=dict(_field(d, "metrics", dict, "", {})),
            checks=dict(checks),
            versions=dict(versions),
            files=dict(files),
            format_version=_field(d, "format_version", int),
        )


# The JSON types of a manifest's fields, checked strictly: its integers (shapes, k, format) are
# positive and never bools, its numbers finite.
_KINDS = {int: "a positive integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
          dict: "an object"}
_REQUIRED = object()


def _field(d: dict, name: str, kind: type, where: str = "", default=_REQUIRED):
    """``d[name]`` if it is of ``kind``; ``default`` if absent, unless required."""
    if name not in d:
        if default is _REQUIRED:
            raise ValueError(f"{where}{name}: missing")
        return default
    return _check(d[name], kind, where + name)


def _check(value, kind: type, label: str):
    """``value`` if it is of ``kind``, else ValueError naming ``label`` and the value."""
    if kind is int:
        ok = type(value) is int and value >= 1
    elif kind is float:
        ok = type(value) in (int, float) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"{label}: {_show(value)} is not {_KINDS[kind]}")
    return value


def _show(value) -> str:
    """A value as the manifest spells it (JSON), shortened."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_bundle_file_name(name: str) -> bool:
    """Whether ``name`` may name a file in a bundle: a plain name in its folder, so a manifest can
    never make the loader open another file (no separators, no absolute path, no "." or "..")."""
    return name not in ("", ".", "..", MANIFEST) and not any(c in name for c in "/\\\0")


@dataclass
class Bundle:
    """A verified bundle on disk: its manifest, the encoder's path and the arrays."""

    path: Path
    manifest: Manifest
    centroids: np.ndarray
    arrays: dict

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER


def manifest_sha256(fields: dict) -> str:
    """sha256 of a manifest's fields but this checksum, as canonical JSON (so it does not depend
    on how the file is indented)."""
    body = {name: value for name, value in fields.items() if name != MANIFEST_SHA256}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_bundle_target(path: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse a path a bundle may not be written to, before any work. ``overwrite`` replaces only
    a bundle (a folder with a manifest) or an empty folder: anything else may be the user's own
    data, which replacing would delete."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise BundleError(f"{path}: already exists (pass --overwrite to replace it)")
        if path.is_symlink() or not path.is_dir() or not ((path / MANIFEST).is_file() or not any(path.iterdir())):
            raise BundleError(f"{path}: not a model bundle; --overwrite replaces only a bundle folder (one with "
                              f"{MANIFEST}) or an empty folder: remove it yourself or write elsewhere")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise BundleError(f"{path}: cannot be written: {parent} is a file, not a folder")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def runtime_versions() -> dict:
    """Versions of the libraries that produce and score a bundle, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("deepclust", "numpy", "onnxruntime", "onnxruntime-gpu", "faiss-cpu", "faiss-gpu-cu12",
                 "torch", "onnx", "scikit-learn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_bundle(path: str | os.PathLike, manifest: Manifest, files: dict[str, bytes], *,
                 overwrite: bool = False) -> Path:
    """Write a bundle atomically: into a hidden sibling folder, renamed into place at the end.

    ``files`` maps file names to their bytes and must hold the encoder and the centroids.
    The manifest's ``files`` table is filled in here, so nothing else computes checksums.
    """
    path = Path(path)
    for required in (ENCODER, CENTROIDS):
        if required not in files:
            raise BundleError(f"{path}: cannot write a bundle without {required}")
    check_bundle_target(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it private; a bundle is not
        manifest.files = {}
        for name, data in files.items():
            if not is_bundle_file_name(name):
                raise BundleError(f"{path}: invalid bundle file name {name!r}")
            (stage / name).write_bytes(data)
            manifest.files[name] = hashlib.sha256(data).hexdigest()
        (stage / MANIFEST).write_text(manifest.to_json())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(stage, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, path)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle; raise BundleError naming the file and the reason."""
    path = Path(path)
    if not path.is_dir():
        if path.exists():
            raise BundleError(f"{path}: is a file; a model bundle is the folder that holds {MANIFEST}")
        raise BundleError(f"{path}: not a model bundle (no such folder)")
    manifest_path = path / MANIFEST
    try:
        raw = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{manifest_path}: missing (not a model bundle)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path}: unreadable manifest ({e})") from None
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise BundleError(f"{manifest_path}: not a deepclust manifest (no format_version)")
    if type(raw["format_version"]) is not int or raw["format_version"] != FORMAT_VERSION:  # true is not 1
        raise BundleError(
            f"{manifest_path}: bundle format {raw['format_version']!r} is not supported "
            f"(this deepclust reads format {FORMAT_VERSION}); use the deepclust that wrote it"
        )
    if MANIFEST_SHA256 not in raw:
        raise BundleError(f"{manifest_path}: no {MANIFEST_SHA256} (the manifest's checksum of its own fields); "
                          "re-export the bundle")
    if raw[MANIFEST_SHA256] != manifest_sha256(raw):
        raise BundleError(f"{manifest_path}: checksum mismatch (the manifest was edited or is corrupt)")
    try:
        manifest = Manifest.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise BundleError(f"{manifest_path}: malformed manifest ({e})") from None

    for required in (ENCODER, CENTROIDS):
        if required not in manifest.files:
            raise BundleError(f"{manifest_path}: lists no {required}")
    for name, expected in manifest.files.items():
        file = path / name
        if file.is_symlink():  # its bytes may match, but it is not in the bundle
            raise BundleError(f"{file}: is a symbolic link; a bundle's files must be in its folder")
        if not file.is_file():
            raise BundleError(f"{file}: missing from the bundle")
        if sha256_file(file) != expected:
            raise BundleError(f"{file}: checksum mismatch (the file was altered or is corrupt)")

    arrays = {name: _load_array(path / name) for name in manifest.files if name.endswith(".npy")}
    centroids = arrays.pop(CENTROIDS)
    if centroids.dtype != np.float32 or centroids.shape != (manifest.k, manifest.latent_dim):
        raise BundleError(
            f"{path / CENTROIDS}: expected float32 of shape ({manifest.k}, {manifest.latent_dim}), "
            f"found {centroids.dtype} {centroids.shape}"
        )
    if manifest.assignment not in (NEAREST_CENTROID, GAUSSIAN_MIXTURE):
        raise BundleError(f"{manifest_path}: unknown assignment rule {manifest.assignment!r}")
    if manifest.assignment == GAUSSIAN_MIXTURE:
        k, d = manifest.k, manifest.latent_dim
        for name, shape in ((GMM_WEIGHTS, (k,)), (GMM_PRECISIONS_CHOLESKY, (k, d, d))):
            if name not in arrays or arrays[name].shape != shape:
                raise BundleError(f"{path / name}: a Gaussian-mixture bundle needs this array of shape {shape}")
    _warn_if_newer(manifest)
    return Bundle(path=path, manifest=manifest, centroids=centroids, arrays=arrays)


def _load_array(file: Path) -> np.ndarray:
    """A bundle's array, refused unless numeric and finite: a NaN centroid is never the nearest,
    so its cluster would silently never be assigned."""
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BundleError(f"{file}: not a readable .npy array ({e})") from None
    if array.dtype.kind not in "biuf":
        raise BundleError(f"{file}: holds {array.dtype} values, not numbers")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        where = "its value" if array.ndim == 0 else f"{'entry' if array.ndim == 1 else 'row'} {bad[0][0]}"
        raise BundleError(f"{file}: {where} is not finite")
    return array


def _warn_if_newer(manifest: Manifest) -> None:
    from importlib.metadata import PackageNotFoundError, version

    written_by = manifest.versions.get("deepclust")
    try:
        mine = version("deepclust")
    except PackageNotFoundError:
        return
    if written_by and _version_tuple(written_by) > _version_tuple(mine):
        warnings.warn(f"bundle written by deepclust {written_by}, newer than this {mine}", UserWarning,
                      stacklevel=_first_frame_outside_deepclust())


_PACKAGE_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d) + os.sep
                      for d in ("runtime", "trainer", "cli"))


def _first_frame_outside_deepclust() -> int:
    """The stacklevel that names the caller's line, however deep in deepclust the warning starts
    (`Assigner.load`, `load_bundle`, the Ray engine): Python 3.12's `skip_file_prefixes`, by hand."""
    level, frame = 2, sys._getframe(2)  # 1 is the function that warns
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIRS):
        level, frame = level + 1, frame.f_back
    return level


def _version_tuple(v: str) -> tuple:
    parts = []
    for p in v.split("+")[0].split("."):
        parts.append(int(p) if p.isdigit() else 0)
    return tuple(parts)
