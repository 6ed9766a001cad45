"""The Assigner against independent numpy computations (no torch)."""

import json
import threading

import numpy as np
import onnxruntime as ort
import pytest

from deepclust.runtime import Assigner, InputError
from deepclust.runtime.bundle import load_bundle
from deepclust.runtime.errors import BundleError

from ..conftest import write_manifest


@pytest.fixture(scope="module")
def assigner(reference_bundle):
    return Assigner.load(reference_bundle, device="cpu", precision="fp32")


def _reference_embeddings(bundle_path, x):
    """Preprocess by the manifest and run the ONNX encoder directly."""
    b = load_bundle(bundle_path)
    pre = b.manifest.preprocessing
    xp = ((x.reshape(len(x), -1).astype(np.float32) - np.float32(pre.offset)) * np.float32(pre.scale))
    sess = ort.InferenceSession(str(b.encoder_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: xp})[0], b.centroids


def test_labels_are_the_nearest_centroid(assigner, reference_bundle, digits_rows):
    z, c = _reference_embeddings(reference_bundle, digits_rows)
    d2 = ((z[:, None, :] - c[None]) ** 2).sum(-1)
    r = assigner.assign(digits_rows, embeddings=True)
    np.testing.assert_allclose(r.embeddings, z, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r.labels, d2.argmin(1))
    np.testing.assert_allclose(r.distances, d2.min(1), rtol=1e-4, atol=1e-4)
    assert r.labels.dtype == np.int32 and r.distances.dtype == np.float32


def test_soft_assignment_is_the_student_t_kernel(assigner, reference_bundle, digits_rows):
    z, c = _reference_embeddings(reference_bundle, digits_rows)
    q = 1.0 / (1.0 + ((z[:, None, :] - c[None]) ** 2).sum(-1))
    q /= q.sum(1, keepdims=True)
    r = assigner.assign(digits_rows, soft=True)
    np.testing.assert_allclose(r.soft, q, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(r.soft.argmax(1), r.labels)


def test_input_is_not_modified(assigner, digits_rows):
    x = digits_rows.copy()
    assigner.assign(x)
    np.testing.assert_array_equal(x, digits_rows)


def test_image_shaped_rows_and_a_single_row(assigner, digits_rows):
    flat = assigner.assign(digits_rows).labels
    np.testing.assert_array_equal(assigner.assign(digits_rows.reshape(-1, 8, 8)).labels, flat)
    assert assigner.assign(digits_rows[0]).labels.tolist() == [flat[0]]


def test_batching_does_not_change_results(reference_bundle, digits_rows):
    small = Assigner.load(reference_bundle, device="cpu", batch_size=7)
    big = Assigner.load(reference_bundle, device="cpu", batch_size=4096)
    np.testing.assert_array_equal(small.assign(digits_rows).labels, big.assign(digits_rows).labels)


def test_streaming_equals_in_memory(assigner, digits_rows):
    whole = assigner.assign(digits_rows)
    parts = list(assigner.assign_batches(np.array_split(digits_rows, 5)))
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)


def test_wrong_feature_count(assigner):
    with pytest.raises(InputError, match=r"rows have 10 values, the model expects 64 \(sample shape 8x8\)"):
        assigner.assign(np.zeros((4, 10)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(assigner, digits_rows, bad):
    x = digits_rows.copy()
    x[5, 3] = bad
    with pytest.raises(InputError, match="row 5 holds NaN, Inf"):
        assigner.assign(x)


def test_empty_and_non_numeric(assigner):
    with pytest.raises(InputError, match="empty input"):
        assigner.assign(np.zeros((0, 64)))
    with pytest.raises(InputError, match="not numeric"):
        assigner.assign(np.array([["a"] * 64]))


def test_thread_safe_scoring(assigner, digits_rows):
    expected = assigner.assign(digits_rows).labels
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(assigner.assign(digits_rows).labels)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    assert all(np.array_equal(r, expected) for r in results)


def test_a_data_frame_is_read_by_column_name_when_the_model_names_its_features(bundle_copy, digits_rows):
    pd = pytest.importorskip("pandas")
    names = [f"p{j}" for j in range(64)]
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["input"].update(feature_names=names, sample_shape=[64])  # as a bundle trained on a table
    write_manifest(bundle_copy, manifest)
    a = Assigner.load(bundle_copy, device="cpu", precision="fp32")
    expected = a.assign(digits_rows).labels
    frame = pd.DataFrame(digits_rows, columns=names)
    reordered = frame[names[::-1]].assign(segment="x")  # another column order and a column that is no feature
    np.testing.assert_array_equal(a.assign(reordered).labels, expected)
    with pytest.raises(InputError, match="missing feature columns the model expects: p0"):
        a.assign(frame.drop(columns="p0"))



def test_a_frame_of_numbered_columns_fits_a_model_trained_on_a_headerless_csv(bundle_copy, digits_rows):
    pd = pytest.importorskip("pandas")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["input"].update(feature_names=[str(j) for j in range(64)], sample_shape=[64])  # CSV columns "0", "1", ...
    write_manifest(bundle_copy, manifest)
    a = Assigner.load(bundle_copy, device="cpu", precision="fp32")
    frame = pd.DataFrame(digits_rows)  # columns 0, 1, ... (integers)
    np.testing.assert_array_equal(a.assign(frame[frame.columns[::-1]]).labels, a.assign(digits_rows).labels)


def test_frames_of_nullable_and_arrow_columns_score_as_numpy_and_a_bad_column_is_named(assigner, digits_rows):
    pd = pytest.importorskip("pandas")
    expected = assigner.assign(digits_rows).labels
    frame = pd.DataFrame(digits_rows)
    for dtype in ("Int64", "Float64", "float32[pyarrow]"):  # pandas' nullable and Arrow-backed columns
        np.testing.assert_array_equal(assigner.assign(frame.astype(dtype)).labels, expected)
    with pytest.raises(InputError, match="input: column '5' is \\w+, not numeric"):
        assigner.assign(frame.astype({5: str}))
    with pytest.raises(InputError, match="column names repeat \\('3'\\)"):
        assigner.assign(frame.rename(columns={4: 3}))
    holes = frame.astype("Float64")
    holes.iloc[7, 2] = pd.NA
    with pytest.raises(InputError, match="row 7 holds NaN"):
        assigner.assign(holes)


def test_a_ragged_list_and_a_batch_size_below_one_are_refused(reference_bundle, assigner):
    with pytest.raises(InputError, match="input: not an array of rows"):
        assigner.assign([[0.0] * 64, [0.0] * 63])
    with pytest.raises(InputError, match="batch_size=0 should be >= 1"):
        Assigner.load(reference_bundle, batch_size=0)


def test_rows_already_scaled_for_an_8_bit_model_draw_one_warning(reference_bundle, digits_rows, tmp_path, caplog):
    from deepclust.runtime import score_file

    a = Assigner.load(reference_bundle, device="cpu", precision="fp32")
    assert a.manifest.input.dtype == "uint8"  # trained on integers the bundle scales itself
    a.assign(digits_rows)
    assert "pass the raw values" not in caplog.text
    a.assign(digits_rows / 16)
    a.assign(digits_rows / 16)
    assert caplog.text.count("input: values lie within [0, 1], but the model was trained on 8-bit integers") == 1
    a.assign((digits_rows > 8).astype(np.float32))  # 0/1 rows may be raw values
    np.save(tmp_path / "scaled.npy", digits_rows / 16)
    caplog.clear()
    score_file(Assigner.load(reference_bundle, device="cpu"), tmp_path / "scaled.npy", tmp_path / "out.npy")
    assert "scaled.npy: values lie within [0, 1]" in caplog.text


def _restamp(bundle, edit=lambda manifest: None, drop=("pipeline.onnx", "pipeline.int8.onnx")):
    """Re-checksum a bundle a test changed (as a faulty writer would), without the fused graphs in ``drop``."""
    import hashlib

    m = json.loads((bundle / "manifest.json").read_text())
    for name in drop:
        (bundle / name).unlink()
        del m["files"][name]
    m["files"] = {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name in m["files"]}
    edit(m)
    write_manifest(bundle, m)


def _pad_centroids(bundle, width):
    c = np.load(bundle / "centroids.npy")
    np.save(bundle / "centroids.npy", np.pad(c, ((0, 0), (0, width - c.shape[1]))))


@pytest.mark.parametrize("precision, graph", [("fp32", "pipeline.onnx"), ("int8", "pipeline.int8.onnx")])
def test_a_fused_pipeline_with_other_centroids_than_k_is_refused(bundle_copy, precision, graph):
    # It would give labels up to 9 for a manifest that says k=5, and a --soft CSV of 5 of the 10 columns.
    np.save(bundle_copy / "centroids.npy", np.load(bundle_copy / "centroids.npy")[:5])
    _restamp(bundle_copy, lambda m: m.update(k=5), drop=())
    with pytest.raises(BundleError) as e:
        Assigner.load(bundle_copy, device="cpu", precision=precision)
    assert str(e.value) == (f"{bundle_copy / graph}: output 'distances' has shape (n, 10); the manifest says (n, 5) "
                            "(k=5, latent_dim=10)")


@pytest.mark.parametrize("precision, graph", [("fp32", "pipeline.onnx"), ("int8", "pipeline.int8.onnx")])
def test_a_fused_pipeline_with_other_centroids_of_the_same_shape_is_refused(bundle_copy, precision, graph):
    # Reordered centroids: the shapes fit, but the pipeline's label i would be the manifest's 9 - i.
    np.save(bundle_copy / "centroids.npy", np.load(bundle_copy / "centroids.npy")[::-1].copy())
    _restamp(bundle_copy, drop=())
    with pytest.raises(BundleError) as e:
        Assigner.load(bundle_copy, device="cpu", precision=precision)
    assert str(e.value) == (f"{bundle_copy / graph}: its distances are not to the centroids in centroids.npy; "
                            "it was not fused from this bundle")


def test_a_fused_pipeline_with_other_preprocessing_is_refused(bundle_copy):
    # The manifest says 1/255, the pipeline divides by 16: every row would score as if 16 times brighter.
    _restamp(bundle_copy, lambda m: m["preprocessing"].update(scale=1 / 255), drop=())
    with pytest.raises(BundleError, match=r"pipeline.onnx: its embedding of probe rows differs from encoder.onnx's "
                                          r"behind the manifest's preprocessing \(relative difference [0-9.]+\)"):
        Assigner.load(bundle_copy, device="cpu", precision="fp32")


def test_a_fused_pipeline_of_another_latent_dim_is_refused(bundle_copy):
    _pad_centroids(bundle_copy, 12)
    _restamp(bundle_copy, lambda m: m.update(latent_dim=12), drop=())
    with pytest.raises(BundleError, match=r"pipeline.onnx: output 'z' has shape \(n, 10\); the manifest says "
                                          r"\(n, 12\)"):
        Assigner.load(bundle_copy, device="cpu", precision="fp32")


def test_an_encoder_of_another_latent_dim_is_refused(bundle_copy):
    _pad_centroids(bundle_copy, 12)  # was a bare AssertionError from FAISS
    _restamp(bundle_copy, lambda m: m.update(latent_dim=12))
    with pytest.raises(BundleError, match=r"encoder.onnx: output 'z' has shape \(n, 10\); the manifest says \(n, 12\)"):
        Assigner.load(bundle_copy, device="cpu")


def test_an_encoder_that_is_not_an_encoder_is_refused(bundle_copy):
    import shutil

    shutil.copy(bundle_copy / "pipeline.onnx", bundle_copy / "encoder.onnx")  # was "not enough values to unpack"
    _restamp(bundle_copy)
    with pytest.raises(BundleError, match=r"encoder.onnx: output 'label' has shape \(n,\); the manifest says "
                                          r"\(n, 10\)"):
        Assigner.load(bundle_copy, device="cpu")


def test_a_pipeline_without_the_fused_outputs_is_refused(bundle_copy):
    import shutil

    shutil.copy(bundle_copy / "encoder.onnx", bundle_copy / "pipeline.onnx")
    _restamp(bundle_copy, drop=())
    with pytest.raises(BundleError, match=r"pipeline.onnx: no output 'label' \(a fused pipeline has label, distance, "
                                          r"distances, z\)"):
        Assigner.load(bundle_copy, device="cpu", precision="fp32")


@pytest.mark.parametrize("drop", [(), ("pipeline.onnx", "pipeline.int8.onnx")])
def test_a_graph_of_another_input_width_is_refused(bundle_copy, drop):
    _restamp(bundle_copy, lambda m: m["input"].update(sample_shape=[7, 7], n_features=49), drop=drop)
    graph = "encoder.onnx" if drop else "pipeline.onnx"
    with pytest.raises(BundleError, match=rf"{graph}: input 'x' has shape \(n, 64\); the manifest says \(n, 49\)"):
        Assigner.load(bundle_copy, device="cpu", precision="fp32")
