"""The convolutional autoencoder: sizes, flat and image-shaped input, ONNX export."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from deepclust.trainer.conv_autoencoder import ConvAutoencoder  # noqa: E402
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
