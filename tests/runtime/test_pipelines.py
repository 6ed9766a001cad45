"""The fused pipeline and its int8 copy against the unfused encoder + FAISS path (no torch)."""

import dataclasses

import numpy as np
import pytest

from deepclust.runtime import Assigner, InputError
from deepclust.runtime.assigner import FAST_PATH_MIN_AGREEMENT, choose_precision
from deepclust.runtime.bundle import PIPELINE, PIPELINE_INT8, Bundle, load_bundle


@pytest.fixture(scope="module")
def bundle(reference_bundle) -> Bundle:
    return load_bundle(reference_bundle)


def _without(bundle: Bundle, *names) -> Bundle:
    files = {k: v for k, v in bundle.manifest.files.items() if k not in names}
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, files=files))


def _with_int8_agreement(bundle: Bundle, agreement: float, held_out: bool = True) -> Bundle:
    checks = {**bundle.manifest.checks, "int8": {**bundle.manifest.checks["int8"], "label_agreement": agreement,
                                                 "held_out": held_out}}
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, checks=checks))


def test_fused_pipeline_equals_encoder_then_faiss(bundle, digits_rows):
    fused = Assigner(bundle, device="cpu", precision="fp32")
    unfused = Assigner(_without(bundle, PIPELINE, PIPELINE_INT8), device="cpu")
    assert fused.fused and not unfused.fused and unfused.index is not None
    a = fused.assign(digits_rows, soft=True, embeddings=True)
    b = unfused.assign(digits_rows, soft=True, embeddings=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.soft, b.soft, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.embed(digits_rows), b.embeddings, rtol=1e-5, atol=1e-5)
    assert a.labels.dtype == np.int32 and a.distances.dtype == np.float32


def test_large_inputs_are_split_into_encoder_calls_without_changing_results(bundle, digits_rows):
    one_call = Assigner(bundle, device="cpu", precision="fp32", batch_size=4096).assign(digits_rows)
    many_calls = Assigner(bundle, device="cpu", precision="fp32", batch_size=7).assign(digits_rows)
    np.testing.assert_array_equal(one_call.labels, many_calls.labels)
    np.testing.assert_allclose(one_call.distances, many_calls.distances, rtol=1e-6, atol=1e-6)


def test_int8_labels_do_not_depend_on_the_batch(bundle, digits_rows):
    # Static calibration fixes the activation scales; dynamic int8 would not pass this.
    a = Assigner(bundle, device="cpu", precision="int8")
    whole = a.assign(digits_rows).labels
    one_by_one = np.concatenate([a.assign(digits_rows[i:i + 1]).labels for i in range(len(digits_rows))])
    in_sevens = np.concatenate([a.assign(digits_rows[i:i + 7]).labels for i in range(0, len(digits_rows), 7)])
    np.testing.assert_array_equal(whole, one_by_one)
    np.testing.assert_array_equal(whole, in_sevens)


def test_int8_agreement_recorded_in_the_manifest_is_what_the_runtime_gets(bundle):
    # The reference bundle was fitted on all of digits, so its parity sample is every row in
    # order; export calibrated on every 10th row and measured agreement on the others.
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    recorded = bundle.manifest.checks["int8"]
    held_out = np.ones(len(x), bool)
    held_out[::10] = False
    assert recorded["rows"] == held_out.sum() and recorded["calibration_rows"] == len(x) - held_out.sum()
    exact = Assigner(bundle, device="cpu", precision="fp32").assign(x[held_out]).labels
    fast = Assigner(bundle, device="cpu", precision="int8").assign(x[held_out]).labels
    assert np.mean(exact == fast) == pytest.approx(recorded["label_agreement"], abs=1e-12)


def test_auto_precision_follows_the_recorded_agreement(bundle):
    assert choose_precision(_with_int8_agreement(bundle, FAST_PATH_MIN_AGREEMENT).manifest) == "int8"
    assert choose_precision(_with_int8_agreement(bundle, FAST_PATH_MIN_AGREEMENT - 1e-4).manifest) == "fp32"
    assert choose_precision(_without(bundle, PIPELINE_INT8).manifest) == "fp32"
    # measured on the rows it was calibrated on (a tiny training set): not evidence enough for auto
    assert choose_precision(_with_int8_agreement(bundle, 1.0, held_out=False).manifest) == "fp32"
    assert Assigner(_with_int8_agreement(bundle, 0.9), device="cpu").precision == "fp32"
    assert choose_precision(_with_int8_agreement(bundle, 0.9).manifest, "int8") == "int8"  # asked for


def test_int8_asked_of_a_bundle_without_it(bundle):
    with pytest.raises(InputError, match="no int8 pipeline"):
        Assigner(_without(bundle, PIPELINE_INT8), device="cpu", precision="int8")
    with pytest.raises(InputError, match="precision='fp16'"):
        choose_precision(bundle.manifest, "fp16")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_io_binding_path_gives_the_same_results(bundle, digits_rows, precision):
    # The CUDA path binds inputs and outputs; forcing it on CPU tests the same code.
    plain = Assigner(bundle, device="cpu", precision=precision, io_binding=False)
    bound = Assigner(bundle, device="cpu", precision=precision, io_binding=True)
    a, b = plain.assign(digits_rows, soft=True), bound.assign(digits_rows, soft=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.distances, b.distances)
    np.testing.assert_array_equal(a.soft, b.soft)
