"""A bundle's ONNX graphs checked against its manifest, before any of them scores.

A checksum proves a file is the one written, not that it matches the manifest: a pipeline
holding 10 centroids under k=5 would score labels up to 9, a wider encoder fail deep in FAISS,
and a fused pipeline built from other preprocessing or centroids would score every row
differently from what ``inspect`` shows, silently. So the declared shapes are checked, and a
fused pipeline is run on a few probe rows beside the encoder, the manifest's preprocessing and
``centroids.npy``; the runtime needs no ``onnx`` package to read the graphs for that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle import ENCODER, PIPELINE, PIPELINE_INPUT, PIPELINE_INT8, PIPELINE_OUTPUTS, Bundle, Manifest
from .errors import BundleError

PROBE_ROWS = 16
# Largest relative difference of a probe row's embedding from the encoder's, for the exact
# pipeline, which repeats the encoder's float32 operations (0 on models/digits). The int8 copy's
# embedding is not compared: on probe rows off its calibration range (a table's constant
# columns get noise) it differs by up to 81% on bundles whose data it scores within their recorded
# agreement, so only its distances and labels are checked.
EXACT_RTOL = 1e-3


def check_graph(session, file: Path, manifest: Manifest, *, fused: bool) -> None:
    """Refuse a session whose graph's inputs and outputs do not fit the manifest (any batch size)."""
    m = manifest
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BundleError(f"{file}: takes {len(inputs)} inputs; a bundle's graphs take one, the rows")
    shape = "x".join(map(str, m.input.sample_shape))
    _check_shape(file, f"input '{inputs[0].name}'", inputs[0].shape, (None, m.input.n_features),
                 f"sample shape {shape}")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if fused:
        expected = {"label": (None,), "distance": (None,), "distances": (None, m.k), "z": (None, m.latent_dim)}
    else:  # the runtime reads an encoder's first output
        expected = {session.get_outputs()[0].name: (None, m.latent_dim)}
    for name, dims in expected.items():
        if name not in outputs:
            raise BundleError(f"{file}: no output '{name}' (a fused pipeline has {', '.join(PIPELINE_OUTPUTS)})")
        _check_shape(file, f"output '{name}'", outputs[name], dims, f"k={m.k}, latent_dim={m.latent_dim}")


def check_pipeline_values(bundle: Bundle, name: str, *, pipeline=None, encoder=None) -> None:
    """Refuse a fused pipeline (``name``: pipeline.onnx or its int8 copy) that does not compute
    what the bundle's encoder, preprocessing and centroids do, on probe rows (the int8 copy: its
    distances to the centroids and its labels only).

    Sessions already made may be passed; CPU ones are made for what is not (a CUDA session's
    TF32 arithmetic would blur the comparison).
    """
    from .session import CPU, create_session

    file, m = bundle.path / name, bundle.manifest
    if pipeline is None or pipeline.get_providers()[:1] != [CPU]:
        pipeline = create_session(file, device="cpu", threads=1)
    x = probe_rows(m)
    label, distance, distances, z = pipeline.run(list(PIPELINE_OUTPUTS), {PIPELINE_INPUT: x})
    if name == PIPELINE:
        if encoder is None:
            encoder = create_session(bundle.path / ENCODER, device="cpu", threads=1)
        z_encoder = encoder.run(None, {encoder.get_inputs()[0].name: m.preprocessing.apply_(x.copy())})[0]
        norm = np.linalg.norm(z_encoder, axis=1)
        worst = float((np.linalg.norm(z - z_encoder, axis=1) / np.where(norm > 0, norm, 1.0)).max())
        if not worst <= EXACT_RTOL:  # NaN fails too
            raise BundleError(f"{file}: its embedding of probe rows differs from {ENCODER}'s behind the manifest's "
                              f"preprocessing (relative difference {worst:.3g}); it was not fused from this bundle")
    z64, c64 = z.astype(np.float64), bundle.centroids.astype(np.float64)
    expected = ((z64[:, None, :] - c64[None]) ** 2).sum(axis=2)
    scale = (z64 ** 2).sum(axis=1)[:, None] + (c64 ** 2).sum(axis=1)[None, :]
    if not (np.abs(distances - expected) <= 1e-4 * scale + 1e-6).all():
        raise BundleError(f"{file}: its distances are not to the centroids in centroids.npy; it was not fused "
                          "from this bundle")
    if not (np.array_equal(label, distances.argmin(axis=1)) and np.array_equal(distance, distances.min(axis=1))):
        raise BundleError(f"{file}: its labels are not the nearest of its own distances")


def probe_rows(manifest: Manifest) -> np.ndarray:
    """Rows in the data's own range, the same every time: for 8-bit data, integers spread over
    what the scale maps to [0, 1] (images: 0-255, digits: 0-16); else the manifest's offset
    plus a standard normal over its scale (z-scores)."""
    rng = np.random.default_rng(0)
    n_features = manifest.input.n_features
    pp = manifest.preprocessing
    offset = np.broadcast_to(np.asarray(pp.offset, np.float64), (n_features,))
    scale = np.broadcast_to(np.asarray(pp.scale, np.float64), (n_features,))
    eight_bit = manifest.input.dtype == "uint8"
    u = rng.uniform(0, 1, (PROBE_ROWS, n_features)) if eight_bit else rng.standard_normal((PROBE_ROWS, n_features))
    x = offset + np.divide(u, scale, out=np.zeros_like(u), where=scale != 0)
    return (np.clip(np.round(x), 0, 255) if eight_bit else x).astype(np.float32)


def check_graphs(bundle: Bundle) -> None:
    """Every ONNX graph of ``bundle`` against its manifest, in CPU sessions: what ``inspect``
    verifies beyond the checksums, whichever graph a scorer picks."""
    from .session import create_session

    files = bundle.manifest.files
    encoder = create_session(bundle.path / ENCODER, device="cpu", threads=1)
    check_graph(encoder, bundle.path / ENCODER, bundle.manifest, fused=False)
    for name in (PIPELINE, PIPELINE_INT8):
        if name in files:
            pipeline = create_session(bundle.path / name, device="cpu", threads=1)
            check_graph(pipeline, bundle.path / name, bundle.manifest, fused=True)
            check_pipeline_values(bundle, name, pipeline=pipeline, encoder=encoder)


def _check_shape(file: Path, what: str, got: list, expected: tuple, why: str) -> None:
    """``expected`` has None for the batch dimension, which may be anything (symbolic or fixed)."""
    if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
        raise BundleError(f"{file}: {what} has shape {_dims(got, '?')}; the manifest says {_dims(expected, 'n')} "
                          f"({why})")


def _dims(dims, unknown: str) -> str:
    names = [unknown if d is None else str(d) for d in dims]
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"
