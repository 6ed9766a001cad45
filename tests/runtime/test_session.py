"""Execution-provider choice and the CUDA -> CPU fallback, forced through the provider list."""

import logging

import pytest

from deepclust.runtime.errors import DeepclustError
from deepclust.runtime.session import CPU, CUDA, create_session, resolve_providers


def test_auto_prefers_cuda_when_listed():
    assert resolve_providers("auto", available=[CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers("auto", available=[CPU]) == [CPU]
    assert resolve_providers("cpu", available=[CUDA, CPU]) == [CPU]


def test_cuda_requested_but_absent_is_an_error():
    with pytest.raises(DeepclustError, match="Provider CUDAExecutionProvider is not available"):
        resolve_providers("cuda", available=[CPU])


def test_unknown_device():
    with pytest.raises(DeepclustError, match="device='tpu' should be one of auto, cpu, cuda"):
        resolve_providers("tpu", available=[CPU])


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_that_fails_to_load_falls_back_to_cpu_with_a_log_line(reference_bundle, caplog):
    # On a machine without CUDA, asking onnxruntime for it is exactly the silent-fallback case.
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("a working CUDA provider would not fall back")
    with caplog.at_level(logging.WARNING, logger="deepclust"):
        sess = create_session(reference_bundle / "encoder.onnx", providers=[CUDA, CPU])
    assert sess.get_providers() == [CPU]
    assert "CUDA execution provider failed to load; running the encoder on CPU" in caplog.text
