"""One ONNX graph for the whole scoring path: preprocessing, encoder, nearest centroid.

Running the three steps as one onnxruntime call removes two numpy passes and a FAISS call
per batch, and lets the runtime hand a batch to a single session. The graph takes raw rows
``x`` (n, n_features) float32 and returns ``label`` (n,) int64, ``distance`` (n,) float32
(squared L2 to the nearest centroid), ``distances`` (n, k) and the embedding ``z``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepclust.runtime.bundle import PIPELINE_INPUT, PIPELINE_OUTPUTS
from deepclust.runtime.preprocessing import Preprocessing

# onnx >= 1.23 stamps an IR version that onnxruntime 1.31 rejects; 8 is read by every
# onnxruntime that supports opset 17.
IR_VERSION = 8


def fuse_pipeline(encoder_onnx: bytes, preprocessing: Preprocessing, centroids: np.ndarray) -> bytes:
    """Wrap a serialised encoder ((n, d) -> z) with its preprocessing and the argmin over ``centroids``."""
    model = onnx.load_from_string(encoder_onnx)
    graph = model.graph
    enc_in, enc_out = graph.input[0].name, graph.output[0].name
    n_features = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    c = np.ascontiguousarray(centroids, dtype=np.float32)

    def const(name, value):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    # Rename the encoder's input so the preprocessing can feed it.
    for node in graph.node:
        node.input[:] = ["pp/x" if i == enc_in else i for i in node.input]
    pre = [
        helper.make_node("Sub", [PIPELINE_INPUT, const("pp/offset", _row(preprocessing.offset))], ["pp/centred"],
                         name="pp/sub"),
        helper.make_node("Mul", ["pp/centred", const("pp/scale", _row(preprocessing.scale))], ["pp/x"],
                         name="pp/mul"),
    ]
    # ||z||^2 - 2 z.c + ||c||^2, clipped at 0 like an exact search, then argmin / min.
    post = [
        helper.make_node("ReduceSumSquare", [enc_out], ["nc/z2"], axes=[1], keepdims=1, name="nc/z2"),
        helper.make_node("MatMul", [enc_out, const("nc/centroids_t_x2", 2.0 * c.T)], ["nc/zc2"], name="nc/zc"),
        helper.make_node("Sub", ["nc/z2", "nc/zc2"], ["nc/partial"], name="nc/sub"),
        helper.make_node("Add", ["nc/partial", const("nc/c2", (c * c).sum(axis=1)[None, :])], ["nc/raw"],
                         name="nc/add"),
        helper.make_node("Max", ["nc/raw", const("nc/zero", 0.0)], ["distances"], name="nc/clip"),
        helper.make_node("ArgMin", ["distances"], ["label"], axis=1, keepdims=0, name="nc/argmin"),
        helper.make_node("ReduceMin", ["distances"], ["distance"], axes=[1], keepdims=0, name="nc/min"),
    ]
    if enc_out != "z":
        post.append(helper.make_node("Identity", [enc_out], ["z"], name="nc/z"))
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(PIPELINE_INPUT, TensorProto.FLOAT, ["n", n_features]))
    del graph.output[:]
    k, d = c.shape
    shapes = {"label": (TensorProto.INT64, ["n"]), "distance": (TensorProto.FLOAT, ["n"]),
              "distances": (TensorProto.FLOAT, ["n", k]), "z": (TensorProto.FLOAT, ["n", d])}
    graph.output.extend(helper.make_tensor_value_info(name, *shapes[name]) for name in PIPELINE_OUTPUTS)
    graph.name = "deepclust_pipeline"
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _row(value) -> np.ndarray:
    """A scalar, or a per-feature vector as a (1, n_features) row that broadcasts over the batch."""
    return np.asarray(value, dtype=np.float32) if np.ndim(value) == 0 else np.asarray(value, np.float32)[None, :]
