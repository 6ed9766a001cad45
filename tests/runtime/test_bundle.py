"""The bundle format: verification on load, atomic writes, clear refusals."""

import json

import numpy as np
import pytest

from deepclust.runtime.bundle import (CENTROIDS, ENCODER, FORMAT_VERSION, MANIFEST, InputSpec, Manifest,
                                      load_bundle, npy_bytes, write_bundle)
from deepclust.runtime.errors import BundleError
from deepclust.runtime.preprocessing import Preprocessing

from ..conftest import write_manifest


def test_reference_bundle_loads_with_matching_shapes(reference_bundle):
    b = load_bundle(reference_bundle)
    m = b.manifest
    assert m.format_version == FORMAT_VERSION
    assert b.centroids.shape == (m.k, m.latent_dim) and b.centroids.dtype == np.float32
    assert set(m.files) >= {ENCODER, CENTROIDS}
    assert m.input.n_features == 64


@pytest.mark.parametrize("victim", [ENCODER, CENTROIDS])
def test_missing_file_is_named(bundle_copy, victim):
    (bundle_copy / victim).unlink()
    with pytest.raises(BundleError, match=f"{victim}: missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("victim", [ENCODER, CENTROIDS])
def test_altered_file_fails_its_checksum(bundle_copy, victim):
    data = bytearray((bundle_copy / victim).read_bytes())
    data[-1] ^= 0xFF
    (bundle_copy / victim).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{victim}: checksum mismatch"):
        load_bundle(bundle_copy)


def test_corrupt_manifest_is_named(bundle_copy):
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json: unreadable manifest"):
        load_bundle(bundle_copy)


def test_newer_format_version_is_refused(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=f"format {FORMAT_VERSION + 1} is not supported"):
        load_bundle(bundle_copy)


def test_a_format_version_of_another_type_is_shown_as_it_is(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["format_version"] = str(FORMAT_VERSION)  # not "format 1 is not supported (this reads format 1)"
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=f"format '{FORMAT_VERSION}' is not supported"):
        load_bundle(bundle_copy)


def test_not_a_bundle(tmp_path, reference_bundle):
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="manifest.json: is a file; a model bundle is the folder that holds "
                                          "manifest.json"):
        load_bundle(reference_bundle / MANIFEST)
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(tmp_path)


def _tiny_manifest():
    return Manifest(input=InputSpec(sample_shape=(3,)), preprocessing=Preprocessing(scale=0.5), latent_dim=2, k=2,
                    method={"name": "test"})


def test_write_then_load_round_trips_and_checksums_every_file(tmp_path):
    files = {ENCODER: b"not really onnx", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32))}
    path = write_bundle(tmp_path / "b", _tiny_manifest(), files)
    b = load_bundle(path)
    assert b.manifest.preprocessing == Preprocessing(scale=0.5)
    assert set(b.manifest.files) == {ENCODER, CENTROIDS}
    np.testing.assert_array_equal(b.centroids, np.eye(2))
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging folder left behind


def test_write_refuses_existing_unless_overwrite(tmp_path):
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32))}
    write_bundle(tmp_path / "b", _tiny_manifest(), files)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path / "b", _tiny_manifest(), files)
    files[ENCODER] = b"y"
    write_bundle(tmp_path / "b", _tiny_manifest(), files, overwrite=True)
    assert (tmp_path / "b" / ENCODER).read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_centroid_shape_must_match_manifest(tmp_path):
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(3, dtype=np.float32))}
    write_bundle(tmp_path / "b", _tiny_manifest(), files)
    with pytest.raises(BundleError, match=r"centroids.npy: expected float32 of shape \(2, 2\)"):
        load_bundle(tmp_path / "b")


def test_pickled_arrays_are_never_loaded(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    files = {ENCODER: b"x", CENTROIDS: buf.getvalue()}
    write_bundle(tmp_path / "b", _tiny_manifest(), files)
    with pytest.raises(BundleError, match="centroids.npy: not a readable .npy array"):
        load_bundle(tmp_path / "b")


def test_gaussian_mixture_bundle_needs_its_arrays(tmp_path):
    from deepclust.runtime.bundle import GAUSSIAN_MIXTURE, GMM_WEIGHTS

    m = _tiny_manifest()
    m.assignment = GAUSSIAN_MIXTURE
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32)), GMM_WEIGHTS: npy_bytes(np.ones(2))}
    write_bundle(tmp_path / "b", m, files)
    with pytest.raises(BundleError, match="gmm_precisions_cholesky.npy: a Gaussian-mixture bundle needs"):
        load_bundle(tmp_path / "b")


def test_an_edited_manifest_fails_its_own_checksum(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    (bundle_copy / MANIFEST).write_text(json.dumps(m, indent=4))  # layout is not content
    assert load_bundle(bundle_copy).manifest.k == m["k"]
    m["preprocessing"]["scale"] *= 2  # would change every embedding, as an altered encoder would
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest.json: checksum mismatch"):
        load_bundle(bundle_copy)


def test_overwrite_replaces_only_a_bundle_or_an_empty_folder(tmp_path):
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32))}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user data")
    (tmp_path / "file").write_text("user data")
    for target in ("mine", "file"):
        with pytest.raises(BundleError, match=f"{target}: not a model bundle"):
            write_bundle(tmp_path / target, _tiny_manifest(), files, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == (tmp_path / "file").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]
    (tmp_path / "empty").mkdir()
    write_bundle(tmp_path / "empty", _tiny_manifest(), files, overwrite=True)
    assert (tmp_path / "empty" / MANIFEST).is_file()


def test_a_newer_bundles_warning_names_the_callers_line(bundle_copy):
    from importlib.metadata import version

    from deepclust.runtime.assigner import Assigner

    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["versions"]["deepclust"] = "999.0"
    write_manifest(bundle_copy, m)
    for load in (load_bundle, Assigner.load):  # called directly, and from inside deepclust
        with pytest.warns(UserWarning, match=f"newer than this {version('deepclust')}") as caught:
            load(bundle_copy)
        assert [w.filename for w in caught] == [__file__], load
