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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_centroids_are_refused(tmp_path, bad):
    # A NaN row is never the nearest centroid: that cluster would silently never be assigned.
    c = np.eye(2, dtype=np.float32)
    c[1, 0] = bad
    write_bundle(tmp_path / "b", _tiny_manifest(), {ENCODER: b"x", CENTROIDS: npy_bytes(c)})
    with pytest.raises(BundleError, match="centroids.npy: row 1 is not finite"):
        load_bundle(tmp_path / "b")


def test_non_finite_gaussian_mixture_arrays_are_refused(tmp_path):
    from deepclust.runtime.bundle import GAUSSIAN_MIXTURE, GMM_PRECISIONS_CHOLESKY, GMM_WEIGHTS

    m = _tiny_manifest()
    m.assignment = GAUSSIAN_MIXTURE
    chol = np.stack([np.eye(2), np.eye(2)])
    chol[1, 1, 1] = np.inf
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32)), GMM_WEIGHTS: npy_bytes(np.ones(2)),
             GMM_PRECISIONS_CHOLESKY: npy_bytes(chol)}
    write_bundle(tmp_path / "b", m, files)
    with pytest.raises(BundleError, match="gmm_precisions_cholesky.npy: row 1 is not finite"):
        load_bundle(tmp_path / "b")


def test_a_manifest_without_its_own_checksum_is_refused(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    del m["manifest_sha256"]
    m["preprocessing"]["scale"] *= 2  # what a missing checksum would otherwise let through
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest.json: no manifest_sha256 \(the manifest's checksum of its own "
                                          r"fields\); re-export the bundle"):
        load_bundle(bundle_copy)


def _set(fields: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        fields = fields[name]
    fields[last] = value


@pytest.mark.parametrize("field, value, message", [
    ("input", "abc", 'input: "abc" is not an object'),
    ("input", [1], "input: [1] is not an object"),
    ("preprocessing", [1, 2], "preprocessing: [1, 2] is not an object"),
    ("preprocessing", None, "preprocessing: null is not an object"),
    ("preprocessing.scale", "x", 'preprocessing.scale: "x" is not a number'),
    ("preprocessing.scale", [1.0, 2.0], "preprocessing.scale: 2 values for 64 features"),
    ("method", "kmeans", 'method: "kmeans" is not an object'),
    ("method.params", [1, 2], "method.params: [1, 2] is not an object"),  # `inspect` would crash on it
    ("checks.int8", "x", 'checks.int8: "x" is not an object'),  # `assign --precision auto` would crash on it
    ("checks.int8.label_agreement", "1", 'checks.int8.label_agreement: "1" is not a number'),
    ("input.sample_shape", "88", 'input.sample_shape: "88" is not a list'),  # not (8, 8)
    ("input.sample_shape", [8, 0], "input.sample_shape[1]: 0 is not a positive integer"),
    ("input.n_features", 49, "input.n_features: 49, but sample_shape [8, 8] holds 64 values"),
    ("input.feature_names", "abc", 'input.feature_names: "abc" is not a list'),  # not ('a', 'b', 'c')
    ("input.feature_names", ["a"], "input.feature_names: 1 names for 64 features"),
    ("k", 10.9, "k: 10.9 is not a positive integer"),  # not 10
    ("k", -10, "k: -10 is not a positive integer"),
    ("k", None, "k: null is not a positive integer"),
    ("latent_dim", True, "latent_dim: true is not a positive integer"),
    ("metrics", [1], "metrics: [1] is not an object"),
    ("versions.deepclust", 5, "versions.deepclust: 5 is not a string"),
    ("files", ["encoder.onnx"], 'files: ["encoder.onnx"] is not an object'),
    ("files.encoder\\.onnx", 5, 'files."encoder.onnx": 5 is not a string'),
])
def test_malformed_manifest_fields_are_named(bundle_copy, field, value, message):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    if field == "files.encoder\\.onnx":
        m["files"]["encoder.onnx"] = value
    else:
        _set(m, field, value)
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError) as e:
        load_bundle(bundle_copy)
    assert str(e.value) == f"{bundle_copy / MANIFEST}: malformed manifest ({message})"


def test_a_missing_field_is_named(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    del m["input"]["sample_shape"]
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match=r"manifest.json: malformed manifest \(input.sample_shape: missing\)"):
        load_bundle(bundle_copy)


def test_a_boolean_format_version_is_not_format_1(bundle_copy):
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["format_version"] = True  # == 1 in Python, but not the integer 1
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match="manifest.json: bundle format True is not supported"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["../outside.npy", "OUTSIDE", "..", "sub/x.npy", MANIFEST])
def test_a_listed_file_outside_the_bundle_folder_is_refused(bundle_copy, name):
    import hashlib

    outside = bundle_copy.parent / "outside.npy"
    outside.write_bytes((bundle_copy / CENTROIDS).read_bytes())
    name = str(outside) if name == "OUTSIDE" else name  # an absolute path
    m = json.loads((bundle_copy / MANIFEST).read_text())
    m["files"][name] = hashlib.sha256(outside.read_bytes()).hexdigest()
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError) as e:
        load_bundle(bundle_copy)
    assert str(e.value) == (f"{bundle_copy / MANIFEST}: malformed manifest (files: {json.dumps(name)} is not a "
                            "plain file name in the bundle folder)")


def test_a_listed_file_that_is_a_symbolic_link_is_refused(bundle_copy):
    outside = bundle_copy.parent / "elsewhere.onnx"
    (bundle_copy / ENCODER).rename(outside)
    (bundle_copy / ENCODER).symlink_to(outside)  # same bytes, same checksum, but not in the bundle
    with pytest.raises(BundleError, match="encoder.onnx: is a symbolic link; a bundle's files must be in its folder"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["..", ".", "a\\b", MANIFEST])
def test_write_refuses_a_name_that_is_not_a_plain_file_name(tmp_path, name):
    files = {ENCODER: b"x", CENTROIDS: npy_bytes(np.eye(2, dtype=np.float32)), name: b"y"}
    with pytest.raises(BundleError, match="invalid bundle file name"):
        write_bundle(tmp_path / "b", _tiny_manifest(), files)
    assert list(tmp_path.iterdir()) == []
