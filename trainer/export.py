"""Export a trained model to a bundle, then prove the runtime reproduces it.

The encoder goes to ONNX; the bundle is written through the runtime's own format code into
a staging folder, loaded back with the runtime's Assigner, and compared with torch on the
training sample (embeddings within tolerance, labels agreeing on >= 99.9% of rows) before it
is moved into place. The measured parity is recorded in the manifest.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from deepclust.runtime.assigner import Assigner
from deepclust.runtime.bundle import (CENTROIDS, ENCODER, GAUSSIAN_MIXTURE, NEAREST_CENTROID, PIPELINE,
                                      PIPELINE_INT8, InputSpec, Manifest, check_bundle_target, npy_bytes,
                                      runtime_versions, write_bundle)
from deepclust.runtime.errors import DeepclustError

from .pipeline_graph import fuse_pipeline
from .quantize import quantize_pipeline

ONNX_OPSET = 17
PARITY_ROWS = 20_000
MIN_AGREEMENT = 0.999
EMBEDDING_RTOL = 1e-3


def encoder_to_onnx(encoder: torch.nn.Module, n_features: int) -> bytes:
    """Serialise ``encoder`` ((n, n_features) float32 -> (n, latent)) with a dynamic batch axis."""
    encoder = copy.deepcopy(encoder).to("cpu").eval()  # the model itself stays on its device
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no extra packages (onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(encoder, (torch.zeros(2, n_features),), buf, input_names=["x"], output_names=["z"],
                          dynamic_axes={"x": {0: "n"}, "z": {0: "n"}}, opset_version=ONNX_OPSET, dynamo=False)
    return buf.getvalue()


def export_bundle(model, path, *, overwrite: bool = False, int8: bool = True) -> Path:
    """Write the fitted ``DeepClustering`` model to ``path`` and verify it with the runtime.

    Nearest-centroid bundles also get the fused ``pipeline.onnx`` and, with ``int8``, its
    statically calibrated int8 copy, whose agreement with fp32 is measured and recorded.
    """
    check_bundle_target(path, overwrite=overwrite)  # before the export work, not after it
    x_raw = model._fit_sample
    manifest = Manifest(
        input=InputSpec(sample_shape=tuple(model.sample_shape_), dtype=str(x_raw.dtype),
                        feature_names=model.feature_names_),
        preprocessing=model.preprocessing_,
        latent_dim=int(model.cluster_centers_.shape[1]),  # a contrastive encoder's features, not latent_dim
        k=model.n_clusters,
        method={"name": f"{model.pretraining}+{model.method}", "params": model._recorded_params()},
        assignment=GAUSSIAN_MIXTURE if model.method == "gmm" else NEAREST_CENTROID,
        metrics=dict(model.metrics_),
        versions=runtime_versions(),
    )
    centroids = model.cluster_centers_.astype(np.float32)
    encoder = encoder_to_onnx(model.embedder_, model.n_features_in_)
    files = {ENCODER: encoder, CENTROIDS: npy_bytes(centroids),
             **{name: npy_bytes(a) for name, a in model.head_arrays_.items()}}
    calibrated = None
    if manifest.assignment == NEAREST_CENTROID:
        files[PIPELINE] = fuse_pipeline(encoder, model.preprocessing_, centroids)
        if int8:
            files[PIPELINE_INT8], calibrated = quantize_pipeline(files[PIPELINE], x_raw)
    with tempfile.TemporaryDirectory(prefix="deepclust-export-") as tmp:
        staged = write_bundle(Path(tmp) / "bundle", manifest, files)
        manifest.checks = check_parity(model, staged)
        if calibrated is not None:
            manifest.checks["int8"] = check_int8(staged, x_raw, calibrated)
    return write_bundle(path, manifest, files, overwrite=overwrite)


def check_int8(bundle_path: Path, x_raw: np.ndarray, calibrated: np.ndarray) -> dict:
    """How often the int8 pipeline's labels equal fp32's, on rows not used to calibrate it."""
    held_out = ~calibrated if (~calibrated).any() else calibrated
    x = x_raw[held_out]
    exact = Assigner.load(bundle_path, device="cpu", precision="fp32").assign(x).labels
    fast = Assigner.load(bundle_path, device="cpu", precision="int8").assign(x).labels
    return {"label_agreement": float(np.mean(exact == fast)), "rows": int(len(x)),
            "calibration_rows": int(calibrated.sum()), "held_out": bool((~calibrated).any()),
            "calibration": "static, MinMax, per-channel 7-bit weights, uint8 activations, last encoder layer fp32"}


def check_parity(model, bundle_path: Path) -> dict:
    """Compare the runtime (ONNX + search) with torch on up to PARITY_ROWS training rows."""
    x_raw, labels = model._fit_sample, model._fit_sample_labels
    assigner = Assigner.load(bundle_path, device="cpu", precision="fp32")
    result = assigner.assign(x_raw, embeddings=True)
    z_torch = model.transform(x_raw)
    err = float(np.max(np.abs(result.embeddings - z_torch)))
    scale = float(np.max(np.abs(z_torch))) or 1.0
    agreement = float(np.mean(result.labels == labels))
    checks = {"parity_rows": int(len(x_raw)), "embedding_max_abs_error": err,
              "embedding_max_rel_error": err / scale, "label_agreement": agreement}
    if err / scale > EMBEDDING_RTOL:
        raise DeepclustError(
            f"export parity check failed: ONNX vs torch embeddings differ by {err:.3g} (relative {err / scale:.3g}); "
            "the encoder does not export faithfully")
    if agreement < MIN_AGREEMENT:
        raise DeepclustError(
            f"export parity check failed: embeddings match (max error {err:.3g}) but labels agree on only "
            f"{agreement:.4%} of {len(x_raw)} rows (need {MIN_AGREEMENT:.1%}): rows sit almost equally far from "
            "several centroids, so the embedding has collapsed (unscaled features, or fine-tuning run too long, do "
            "this); check the preprocessing, or try another method or seed")
    return checks
