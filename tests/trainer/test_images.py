"""ImageLayout: which sample shapes are images, and how flat rows map to (n, C, H, W)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from deepclust.runtime.errors import DeepclustError  # noqa: E402
from deepclust.trainer.images import ImageLayout  # noqa: E402


@pytest.mark.parametrize("sample_shape, expected", [
    ((28, 28), ImageLayout(1, 28, 28)),
    ((8, 6), ImageLayout(1, 8, 6)),
    ((32, 24, 3), ImageLayout(3, 32, 24, channels_last=True)),   # image folders: (H, W, C)
    ((28, 28, 1), ImageLayout(1, 28, 28)),
    ((3, 32, 24), ImageLayout(3, 32, 24)),                       # torch style: (C, H, W)
    ((1, 28, 28), ImageLayout(1, 28, 28)),
    ((5, 5, 5), ImageLayout(5, 5, 5, channels_last=True)),       # a tie reads as channels-last
])
def test_layout_from_sample_shape(sample_shape, expected):
    layout = ImageLayout.from_sample_shape(sample_shape)
    assert layout == expected
    assert layout.n_features == int(np.prod(sample_shape))


@pytest.mark.parametrize("sample_shape", [(20,), (2, 3, 4, 5), (0, 8)])
def test_non_images_are_refused_with_the_shape_and_who_asked(sample_shape):
    with pytest.raises(DeepclustError, match=rf"architecture='conv' needs image samples .* got sample shape "
                                             rf"\({sample_shape[0]},"):
        ImageLayout.from_sample_shape(sample_shape, needed_by="architecture='conv'")


@pytest.mark.parametrize("sample_shape", [(4, 6), (4, 6, 3), (3, 4, 6)])
def test_rows_to_images_matches_numpy_and_round_trips(sample_shape):
    x = np.arange(2 * np.prod(sample_shape), dtype=np.float32).reshape(2, *sample_shape)
    layout = ImageLayout.from_sample_shape(sample_shape)
    images = layout.to_images(torch.from_numpy(x.reshape(2, -1)))
    expected = {2: x[:, None], 3: x.transpose(0, 3, 1, 2) if layout.channels_last else x}[len(sample_shape)]
    np.testing.assert_array_equal(images.numpy(), expected)
    assert images.shape == (2, layout.channels, layout.height, layout.width)
    np.testing.assert_array_equal(layout.to_rows(images).numpy(), x.reshape(2, -1))
