"""Score data with a bundle: preprocessing, the ONNX encoder, then the assignment rule.

``Assigner`` loads a bundle once and is safe to share between threads (onnxruntime's
``run`` and a FAISS flat search are both thread-safe; nothing here mutates shared state).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .bundle import (ENCODER, GAUSSIAN_MIXTURE, GMM_PRECISIONS_CHOLESKY, GMM_WEIGHTS, NEAREST_CENTROID,
                     PIPELINE, PIPELINE_INT8, Bundle, Manifest, load_bundle)
from .errors import InputError
from .gaussian_mixture import GaussianMixtureRule
from .graph_check import check_graph, check_pipeline_values
from .readers import check_finite
from .search import CentroidIndex
from .session import CUDA, create_session
from .vector_columns import element_names, element_widths, is_missing, source_column, stacked_vectors

# Rows per onnxruntime call. Measured on the DEC-size encoder (benchmarks/throughput.py): calls
# of 512-2048 rows keep the weights and activations in cache; 16,384-row calls lose ~20%.
# Larger inputs are cut to this size, so callers never need to tune it.
log = logging.getLogger("deepclust")

DEFAULT_BATCH_SIZE = 1024
PRECISIONS = ("auto", "fp32", "int8")
# The int8 pipeline is used by default only if its labels agree with fp32 at least this often.
FAST_PATH_MIN_AGREEMENT = 0.995


@dataclass
class Assignment:
    """Per-row results: ``labels`` (n,) int32 and ``distances`` (n,) float32 — squared L2 to the
    nearest centroid, or squared Mahalanobis distance for GMM bundles; ``soft`` (n, k) and
    ``embeddings`` (n, latent_dim) when asked for."""

    labels: np.ndarray
    distances: np.ndarray
    soft: np.ndarray | None = None
    embeddings: np.ndarray | None = None


def choose_precision(manifest: Manifest, precision: str = "auto") -> str:
    """"fp32" or "int8": int8 when asked, or under "auto" when the bundle recorded that its int8
    pipeline agrees with fp32 on at least FAST_PATH_MIN_AGREEMENT of held-out rows."""
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} should be one of {', '.join(PRECISIONS)}")
    has_int8 = PIPELINE_INT8 in manifest.files
    if precision == "int8" and not has_int8:
        raise InputError("this bundle has no int8 pipeline (Gaussian-mixture and --student head bundles, and those "
                         "trained with --no-int8, have none): use --precision fp32 or auto")
    if precision == "auto":  # trusted only when measured on rows the calibration did not see
        check = manifest.checks.get("int8", {})
        trusted = check.get("held_out", True) and check.get("label_agreement", 0.0) >= FAST_PATH_MIN_AGREEMENT
        return "int8" if has_int8 and trusted else "fp32"
    return precision


class Assigner:
    """Assign rows to clusters with a verified bundle.

    Parameters
    ----------
    bundle : Bundle
        From :func:`deepclust.runtime.load_bundle`; or use :meth:`Assigner.load`.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the encoder and the search run; "auto" uses CUDA when it is really there.
    precision : {"auto", "fp32", "int8"}, default "auto"
        "auto" takes the bundle's int8 pipeline when its recorded agreement with fp32 meets
        FAST_PATH_MIN_AGREEMENT, else exact fp32.
    batch_size : int, default 1024
        Rows per encoder call; larger inputs are split, so it bounds memory, not the input size.
    threads : int, optional
        onnxruntime intra-op threads (default: one per core).

    Bundles with a fused ``pipeline.onnx`` run preprocessing, encoder and nearest centroid in
    one onnxruntime call; older bundles and Gaussian-mixture bundles run the encoder, then
    FAISS or the mixture rule. The object is safe to share between threads: onnxruntime's
    ``run`` and a FAISS search are thread-safe and nothing here mutates shared state.

    Examples
    --------
    >>> a = Assigner.load("models/digits")            # doctest: +SKIP
    >>> result = a.assign(x, soft=True)                # doctest: +SKIP
    >>> result.labels, result.distances, result.soft   # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", threads: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto",
                 io_binding: bool | None = None):
        self.bundle = bundle
        if int(batch_size) < 1:
            raise InputError(f"batch_size={batch_size} should be >= 1")
        self.batch_size = int(batch_size)
        self._scale_warned = False
        m = bundle.manifest
        self.precision = choose_precision(m, precision)
        pipeline = PIPELINE_INT8 if self.precision == "int8" else PIPELINE
        self.fused = m.assignment == NEAREST_CENTROID and pipeline in m.files
        model = bundle.path / (pipeline if self.fused else ENCODER)
        self.session = create_session(model, device=device, threads=threads)
        check_graph(self.session, model, m, fused=self.fused)
        if self.fused:  # its embedded preprocessing and centroids, against the manifest's
            check_pipeline_values(bundle, pipeline, pipeline=self.session)
        self._input_name = self.session.get_inputs()[0].name
        # IO binding lets a CUDA session write straight into bound buffers; on CPU it only
        # adds work, but it can be forced there to test the same code path.
        self.io_binding = (CUDA in self.session.get_providers()[:1]) if io_binding is None else io_binding
        self._gmm = None
        self.index = None
        if m.assignment == GAUSSIAN_MIXTURE:
            self._gmm = GaussianMixtureRule(bundle.centroids, bundle.arrays[GMM_WEIGHTS],
                                            bundle.arrays[GMM_PRECISIONS_CHOLESKY])
        elif not self.fused:
            self.index = CentroidIndex(bundle.centroids, device=device)
        log.info("scoring with %s (%s)", model.name, self.precision)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> "Assigner":
        """Load and verify the bundle at ``path`` (checksums, format version, fields) and build the
        session, its graph checked against the manifest."""
        return cls(load_bundle(path), **kwargs)

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def embed(self, x) -> np.ndarray:
        """Encoder output for raw rows ``x`` of shape (n, *sample_shape) or (n, n_features)."""
        x = self._validated_copy(x)
        if self.fused:
            return self._run_batched(x, ("z",))[0]
        return self._embed_prepared(x)

    def assign(self, x, *, soft: bool = False, embeddings: bool = False) -> Assignment:
        """Labels and distances for raw rows ``x``; ``soft`` adds (n, k) cluster probabilities
        (Student-t kernel as in DEC, or the GMM posterior), ``embeddings`` the latent vectors."""
        return self._assign_prepared(self._validated_copy(x), soft, embeddings)

    def assign_batches(self, batches: Iterable[np.ndarray], *, soft: bool = False,
                       embeddings: bool = False) -> Iterator[Assignment]:
        """Streaming form: one Assignment per input batch, for inputs larger than memory."""
        for x in batches:
            yield self.assign(x, soft=soft, embeddings=embeddings)

    # -- hot path: inputs are owned float32 (n, n_features) arrays, already checked ----------

    def _assign_prepared(self, x: np.ndarray, soft: bool, embeddings: bool) -> Assignment:
        """Score raw rows; ``x`` may be overwritten (preprocessed in place)."""
        if self.fused:
            return self._assign_fused(x, soft, embeddings)
        z = self._embed_prepared(x)
        if self._gmm is not None:
            maha = self._gmm.mahalanobis(z)
            log_joint = self._gmm.log_joint(maha)
            labels = log_joint.argmax(axis=1)
            distances = np.take_along_axis(maha, labels[:, None], axis=1)[:, 0]
            probs = self._gmm.posterior(log_joint) if soft else None
        elif soft:
            d2 = self.index.all_distances(z)
            labels = d2.argmin(axis=1)
            distances = np.take_along_axis(d2, labels[:, None], axis=1)[:, 0]
            probs = student_t(d2)
        else:
            d, i = self.index.search(z, 1)
            labels, distances, probs = i[:, 0], d[:, 0], None
        return Assignment(labels=labels.astype(np.int32), distances=distances.astype(np.float32),
                          soft=probs, embeddings=z if embeddings else None)

    def _assign_fused(self, x: np.ndarray, soft: bool, embeddings: bool) -> Assignment:
        names = ("label", "distance") + (("distances",) if soft else ()) + (("z",) if embeddings else ())
        out = dict(zip(names, self._run_batched(x, names)))
        return Assignment(labels=out["label"].astype(np.int32), distances=out["distance"],
                          soft=student_t(out["distances"]) if soft else None, embeddings=out.get("z"))

    def _run_batched(self, x: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        """Run the session over ``x`` in calls of at most ``batch_size`` rows."""
        if len(x) <= self.batch_size:
            return self._run(x, names)
        parts = [self._run(x[s:s + self.batch_size], names) for s in range(0, len(x), self.batch_size)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]

    def _run(self, x: np.ndarray, names) -> list[np.ndarray]:
        if not self.io_binding:
            return self.session.run(list(names), {self._input_name: x})
        binding = self.session.io_binding()  # one per call: bindings are not shared between threads
        binding.bind_cpu_input(self._input_name, x)
        for name in names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _embed_prepared(self, x: np.ndarray) -> np.ndarray:
        self.manifest.preprocessing.apply_(x)
        return self._run_batched(x, (self.session.get_outputs()[0].name,))[0]

    def _validated_copy(self, x, source: str = "input", start: int = 0) -> np.ndarray:
        if is_frame(x):
            x = frame_values(x, self.manifest.input.feature_names, source)
        try:
            x = np.asarray(x)
        except ValueError as e:  # a ragged list of rows
            raise InputError(f"{source}: not an array of rows ({e})") from None
        if x.dtype.kind not in "biuf":
            raise InputError(f"{source}: dtype {x.dtype} is not numeric")
        n_features = self.manifest.input.n_features
        if x.ndim == 1 and x.size == n_features and n_features > 1:
            x = x[None, :]
        if x.ndim == 0:
            raise InputError(f"{source}: a scalar is not a row")
        if len(x) == 0:
            raise InputError(f"{source}: empty input (no rows)")
        if int(np.prod(x.shape[1:])) != n_features:
            raise InputError(self.shape_error(source, x.shape[1:]))
        out = np.array(x.reshape(len(x), n_features), dtype=np.float32, copy=True, order="C")
        check_finite(out, source, start, self.manifest.input.feature_names)
        self.check_scale(out, source)
        return out

    def check_scale(self, x: np.ndarray, source: str) -> None:
        """Warn, once, when a bundle trained on 8-bit integers (images: 0-255) gets fractions
        in [0, 1]: rows already divided by 255 score without error, but wrongly, since the
        bundle scales them itself."""
        if self._scale_warned or self.manifest.input.dtype != "uint8":
            return
        if x.size and x.min() >= 0 and x.max() <= 1 and (x != np.round(x)).any():
            self._scale_warned = True
            log.warning("%s: values lie within [0, 1], but the model was trained on 8-bit integers, which its bundle "
                        "scales itself (by %g): pass the raw values, not scaled ones", source,
                        self.manifest.preprocessing.scale)

    def shape_error(self, source, row_shape) -> str:
        spec = self.manifest.input
        got = int(np.prod(row_shape)) if len(row_shape) else 1
        shape = "x".join(str(s) for s in spec.sample_shape)
        return f"{source}: rows have {got} values, the model expects {spec.n_features} (sample shape {shape})"


def is_frame(x) -> bool:
    """A pandas (or pandas-like) data frame: named columns, read by name."""
    return hasattr(x, "columns")


def frame_values(frame, feature_names, source: str, dtype=np.float32) -> np.ndarray:
    """A data frame's feature columns as ``dtype``, missing values as NaN: by name when the model
    has ``feature_names`` (trained on a table), as files are read, else all in order; a column
    of vectors (arrays in its cells) gives its elements ``emb[0]``, ... as files' vector columns
    do. Column by column, so pandas' nullable and Arrow-backed numeric columns convert and a
    bad one is named. The trainer reads frames through it too, so both sides pick the same columns."""
    columns = list(frame.columns)
    repeated = sorted({str(c) for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"{source}: column names repeat ({', '.join(map(repr, repeated[:5]))}); each column "
                         "needs its own name")
    if feature_names is not None:
        have = {str(c): c for c in columns}  # pd.DataFrame(array)'s columns 0, 1, ... are a CSV's "0", "1", ...
        elements = [source_column(c, have) for c in feature_names]
        missing = [c for c, (column, _) in zip(feature_names, elements) if column not in have]
        if missing:
            raise InputError(f"{source}: missing feature columns the model expects: {', '.join(missing[:10])}")
        picks = [(have[column], element) for column, element in elements]
    else:
        picks = [(c, None) for c in columns]
    widths = element_widths(picks)
    out = np.empty((len(frame), len(picks)), dtype=dtype)
    vectors = {}
    for j, (c, element) in enumerate(picks):
        if element is not None:
            if c not in vectors:
                vectors[c] = stacked_vectors(frame[c], widths[c], source, str(c), dtype)
            out[:, j] = vectors[c][:, element]
            continue
        values = frame[c]
        if getattr(values.dtype, "kind", "O") not in "biuf":
            raise InputError(f"{source}: column {str(c)!r} is {values.dtype}, not numeric")
        out[:, j] = values.to_numpy(dtype=dtype, na_value=np.nan)
    return out


def frame_feature_names(frame) -> list[str] | None:
    """A frame's feature names, a column of vectors counting as its elements (``emb[0]``, ...,
    as many as its first cell holds); None unless every column is named by a string."""
    if not all(isinstance(c, str) for c in frame.columns):
        return None
    names = []
    for c in frame.columns:
        values = frame[c]
        first = None
        if getattr(values.dtype, "kind", "O") == "O":  # the first vector, past missing ones
            first = next((v for v in values.tolist() if not is_missing(v)), None)
        names += element_names(c, len(first)) if isinstance(first, (list, tuple, np.ndarray)) else [c]
    return names


def student_t(d2: np.ndarray) -> np.ndarray:
    """DEC's soft assignment: a Student-t kernel with one degree of freedom, rows summing to 1."""
    q = 1.0 / (1.0 + d2)
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
