"""The convolutional autoencoder: sizes, flat and image-shaped input, ONNX export, a fit that exports."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from deepclust.runtime import Assigner  # noqa: E402
from deepclust.runtime.bundle import load_bundle  # noqa: E402
from deepclust.runtime.errors import DeepclustError  # noqa: E402
from deepclust.trainer.conv_autoencoder import ConvAutoencoder  # noqa: E402
from deepclust.trainer.estimator import DeepClustering  # noqa: E402
from deepclust.trainer.export import encoder_to_onnx  # noqa: E402
from deepclust.trainer.images import ImageLayout  # noqa: E402

SHAPES = [(28, 28), (8, 8), (13, 7), (16, 12, 3), (3, 10, 10), (1, 5)]


def _autoencoder(sample_shape, latent_dim=4, seed=0):
    torch.manual_seed(seed)
    return ConvAutoencoder(ImageLayout.from_sample_shape(sample_shape), (4, 8, 16), latent_dim).eval()


@pytest.mark.parametrize("sample_shape", SHAPES)
def test_output_shapes_for_flat_and_image_shaped_input(sample_shape):
    ae = _autoencoder(sample_shape)
    images = torch.rand(5, *sample_shape)
    flat = images.reshape(5, -1)
    z, x_hat = ae(flat)
    assert z.shape == (5, 4) and x_hat.shape == flat.shape
    z_img, x_hat_img = ae(images)  # the same values in the sample's own shape
    torch.testing.assert_close(z_img, z)
    torch.testing.assert_close(x_hat_img, x_hat)


@pytest.mark.parametrize("sample_shape, after_convs", [
    ((28, 28), (16, 3, 3)),    # DEC-DA on MNIST: 28 -> 14 -> 7 -> 3 (Keras same, same, valid)
    ((8, 8), (16, 1, 1)),      # 8 -> 4 -> 2 -> 1
    ((13, 7), (16, 2, 1)),     # 13 -> 7 -> 4 -> 2 and 7 -> 4 -> 2 -> 1
])
def test_convolution_sizes_hand_computed(sample_shape, after_convs):
    assert _autoencoder(sample_shape).encoder.feature_shape == after_convs


def test_channels_last_rows_are_read_as_pixels_with_channels():
    # Rows of an (H, W, C) image store the C values of a pixel together: a first layer that
    # only passes channel 1 must see the image's channel 1.
    ae = _autoencoder((6, 6, 3))
    conv = ae.encoder.conv[0]
    x = torch.rand(2, 6, 6, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 1] = 1.0
        got = conv(ae.encoder.layout.to_images(x.reshape(2, -1)))
        expected = conv(x[..., 1:2].permute(0, 3, 1, 2).repeat(1, 3, 1, 1))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("sample_shape", [(28, 28), (8, 8), (16, 12, 3)])
def test_onnx_encoder_gives_torch_embeddings_at_any_batch_size(sample_shape):
    ae = _autoencoder(sample_shape)
    n_features = int(np.prod(sample_shape))
    session = ort.InferenceSession(encoder_to_onnx(ae.encoder, n_features), providers=["CPUExecutionProvider"])
    for n in (1, 7, 64):
        x = torch.rand(n, n_features, generator=torch.Generator().manual_seed(n))
        (z_onnx,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(z_onnx, ae.encoder(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def digits():
    from deepclust.trainer.datasets import load_dataset

    return load_dataset("digits")


def conv_model(**kw):
    params = dict(architecture="conv", filters=(8, 16, 32), latent_dim=5, epochs=8, batch_size=32, n_init=3,
                  device="cpu")
    params.update(kw)
    return DeepClustering(10, **params)


@pytest.fixture(scope="module")
def fitted_conv(tmp_path_factory, digits):
    """A conv model fitted on 400 digits and its saved bundle."""
    m = conv_model().fit(digits.x[:400], digits.y[:400], preprocessing=digits.preprocessing)
    return m, m.save(tmp_path_factory.mktemp("conv") / "b")


def test_conv_model_fits_digits_and_exports_with_runtime_parity(fitted_conv, digits):
    m, path = fitted_conv
    x = digits.x[:400]
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    assert m.metrics_["acc"] > 0.3  # 10 classes: chance is about 0.1-0.2
    manifest = load_bundle(path).manifest
    assert manifest.checks["label_agreement"] >= 0.999
    assert manifest.method["params"]["architecture"] == "conv"
    assert manifest.method["params"]["filters"] == [8, 16, 32]
    runtime = Assigner.load(path, precision="fp32")
    assert runtime.fused  # scored by the one-graph pipeline, like dense bundles
    assert np.mean(runtime.assign(x).labels == m.labels_) >= 0.999
    np.testing.assert_allclose(runtime.embed(x), m.transform(x), rtol=1e-4, atol=1e-4)


def test_int8_pipeline_quantises_the_convolutions_but_not_the_latent_projection(fitted_conv, digits):
    # The convolutions are nearly all of a conv encoder's work: int8 that left them in fp32
    # would cost the accuracy of int8 for none of its speed.
    import onnx

    _, path = fitted_conv
    graph = onnx.load(str(path / "pipeline.int8.onnx")).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    consumers = {name: [n.op_type for n in graph.node if name in n.input] for name in producer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    for conv in convs:  # QDQ format: int8 data and weights, dequantised into the Conv (fused to QLinearConv)
        assert producer.get(conv.input[0]) == producer.get(conv.input[1]) == "DequantizeLinear"
        # its Relu folded into the uint8 output range, so the int8 kernel clips and nothing runs in fp32
        assert consumers[conv.output[0]] == ["QuantizeLinear"]
    assert not [n for n in graph.node if n.op_type == "Relu"]
    projection = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and not n.name.startswith("nc/")]
    assert len(projection) == 1
    assert producer.get(projection[0].input[1]) != "DequantizeLinear"  # fp32 weights: the last layer stays exact
    fast = Assigner.load(path, precision="int8").assign(digits.x[:400]).labels
    exact = Assigner.load(path, precision="fp32").assign(digits.x[:400]).labels
    # A tiny model (8 epochs, 40 calibration rows) sits near its boundaries: far from 99.9%, so the
    # runtime would default it to fp32, but a broken quantisation would be near chance.
    assert np.mean(fast == exact) >= 0.8


@pytest.mark.parametrize("sample_shape", [(28, 28), (16, 12, 3)])
def test_flattening_channels_last_computes_the_same_embedding(sample_shape):
    # The int8 graph flattens feature maps in (h, w, c) order so onnxruntime's channels-last int8
    # convolutions need no Transpose back; the permuted projection must make that the same function.
    # (Feature maps of several pixels and channels: on 1 x 1 maps every order is the same.)
    import onnx

    from deepclust.trainer.quantize import _flatten_channels_last, _gemm_as_matmul

    ae, n_features = _autoencoder(sample_shape), int(np.prod(sample_shape))
    original = onnx.load_from_string(encoder_to_onnx(ae.encoder, n_features))
    rewritten = _flatten_channels_last(_gemm_as_matmul(onnx.load_from_string(original.SerializeToString()))[0])
    (flatten,) = [n for n in rewritten.graph.node if n.op_type == "Flatten"]
    (to_nhwc,) = [n for n in rewritten.graph.node if flatten.input[0] in n.output]
    assert to_nhwc.op_type == "Transpose" and list(to_nhwc.attribute[0].ints) == [0, 2, 3, 1]
    x = torch.rand(64, n_features, generator=torch.Generator().manual_seed(0)).numpy()
    (z_original,), (z_rewritten,) = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for m in (original, rewritten))
    np.testing.assert_allclose(z_rewritten, z_original, rtol=1e-5, atol=1e-6)


def test_conv_needs_image_shaped_data():
    x = np.random.default_rng(0).random((60, 20)).astype(np.float32)
    with pytest.raises(DeepclustError, match=r"architecture='conv' needs image samples .* got sample shape \(20,\)"):
        conv_model().fit(x)
    with pytest.raises(DeepclustError, match=r"architecture='mlp' should be one of dense, conv"):
        conv_model(architecture="mlp").fit(x)
    with pytest.raises(DeepclustError, match=r"filters=\(8, 0\) should hold one or more channel counts >= 1"):
        conv_model(filters=(8, 0)).fit(x.reshape(60, 4, 5))
