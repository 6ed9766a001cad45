"""Shared fixtures. The runtime is tested against the committed reference bundle
(models/digits), so no test of the runtime needs torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_BUNDLE = ROOT / "models" / "digits"


@pytest.fixture(scope="session")
def reference_bundle() -> Path:
    assert (REFERENCE_BUNDLE / "manifest.json").is_file(), "run `make reference-bundle`"
    return REFERENCE_BUNDLE


@pytest.fixture
def bundle_copy(tmp_path, reference_bundle) -> Path:
    """A writable copy of the reference bundle, for tests that damage it."""
    dst = tmp_path / "bundle"
    shutil.copytree(reference_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def digits_rows() -> np.ndarray:
    """Rows shaped like the reference bundle's input (64 values, 0..16), without scikit-learn."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 17, size=(300, 64)).astype(np.float32)


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``array`` (uint8) in IDX format, the way the MNIST files are stored."""
    import gzip
    import struct

    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_manifest(bundle: Path, fields: dict) -> None:
    """Write edited manifest fields into a bundle, re-stamped with the manifest's own checksum:
    tests that change a manifest on purpose test what comes after that check."""
    from deepclust.runtime.bundle import MANIFEST, MANIFEST_SHA256, manifest_sha256

    (bundle / MANIFEST).write_text(json.dumps({**fields, MANIFEST_SHA256: manifest_sha256(fields)}))
