"""The one place that builds onnxruntime sessions and picks the execution provider.

onnxruntime-gpu lists CUDAExecutionProvider even where CUDA cannot load, then silently runs
on the CPU; so the providers the session actually got are checked and any fallback is logged.
"""

from __future__ import annotations

import logging
import os

from .errors import DeepclustError

log = logging.getLogger("deepclust")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


def resolve_providers(device: str = "auto", available: list[str] | None = None) -> list[str]:
    """Execution providers to ask for, in order, for ``device`` (auto, cpu or cuda)."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise DeepclustError(f"device={device!r} should be one of {', '.join(DEVICES)}")
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise DeepclustError(f"Provider {CUDA} is not available. Available providers: {', '.join(available)} "
                             "(pip install 'deepclust[gpu]')")
    return [CPU]


def create_session(model: str | os.PathLike | bytes, *, device: str = "auto", threads: int | None = None,
                   providers: list[str] | None = None):
    """An InferenceSession with full graph optimisation; logs the provider it really runs on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    wanted = providers or resolve_providers(device)
    src = model if isinstance(model, bytes) else os.fspath(model)
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=wanted)
    except Exception as e:
        name = "<bytes>" if isinstance(model, bytes) else os.fspath(model)
        raise DeepclustError(f"{name}: onnxruntime cannot load the model ({str(e).strip().splitlines()[0]})") from None
    got = sess.get_providers()
    if wanted[0] == CUDA and CUDA not in got:
        log.warning("CUDA execution provider failed to load; running the encoder on CPU")
    else:
        log.info("encoder runs on %s", got[0])
    return sess
