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


def test_conv_model_fits_digits_and_exports_with_runtime_parity(tmp_path, digits):
    x, y = digits.x[:400], digits.y[:400]
    m = conv_model().fit(x, y, preprocessing=digits.preprocessing)
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    assert m.metrics_["acc"] > 0.3  # 10 classes: chance is about 0.1-0.2
    path = m.save(tmp_path / "b")
    manifest = load_bundle(path).manifest
    assert manifest.checks["label_agreement"] >= 0.999
    assert manifest.method["params"]["architecture"] == "conv"
    assert manifest.method["params"]["filters"] == [8, 16, 32]
    runtime = Assigner.load(path, precision="fp32")
    assert runtime.fused  # scored by the one-graph pipeline, like dense bundles
    assert np.mean(runtime.assign(x).labels == m.labels_) >= 0.999
    np.testing.assert_allclose(runtime.embed(x), m.transform(x), rtol=1e-4, atol=1e-4)


def test_conv_needs_image_shaped_data():
    x = np.random.default_rng(0).random((60, 20)).astype(np.float32)
    with pytest.raises(DeepclustError, match=r"architecture='conv' needs image samples .* got sample shape \(20,\)"):
        conv_model().fit(x)
    with pytest.raises(DeepclustError, match=r"architecture='mlp' should be one of dense, conv"):
        conv_model(architecture="mlp").fit(x)
    with pytest.raises(DeepclustError, match=r"filters=\[8, 0\] should hold one or more channel counts >= 1"):
        conv_model(filters=(8, 0)).fit(x.reshape(60, 4, 5))
