"""Random affine warps: exact hand-computed moves, seeding, and that warped digits keep their class."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from deepclust.trainer.augment import AffineAugment, RowAugmenter, affine_warp, random_warp  # noqa: E402
from deepclust.trainer.images import ImageLayout  # noqa: E402

NONE = AffineAugment(rotation=0.0, shift=0.0, scale=(1.0, 1.0))


def one_pixel(h, w, row, col):
    img = torch.zeros(1, 1, h, w)
    img[0, 0, row, col] = 1.0
    return img


def warp(img, angle=0.0, shift=(0.0, 0.0), scale=1.0):
    return affine_warp(img, angle=torch.tensor([angle]), shift=torch.tensor([shift]), scale=torch.tensor([scale]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sample_shape", [(8, 8), (6, 10, 3), (2, 7, 5)])
def test_shape_and_dtype_are_kept(dtype, sample_shape):
    rows = torch.rand(9, int(np.prod(sample_shape)), dtype=dtype)
    layout = ImageLayout.from_sample_shape(sample_shape)
    out = RowAugmenter(layout, AffineAugment(), torch.Generator().manual_seed(0))(rows)
    assert out.shape == rows.shape and out.dtype == dtype and out.is_contiguous()
    images = layout.to_images(rows)
    out = random_warp(images, AffineAugment(), torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == dtype


@pytest.mark.parametrize("sample_shape", [(8, 8), (6, 10, 3)])
def test_zero_magnitudes_return_the_input(sample_shape):
    rows = torch.rand(9, int(np.prod(sample_shape)))
    augment = RowAugmenter(ImageLayout.from_sample_shape(sample_shape), NONE, torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment(rows), rows, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shift, moved_to", [((1.0, 0.0), (2, 4)),     # one pixel right
                                             ((0.0, 1.0), (3, 3)),     # one pixel down
                                             ((-2.0, -1.0), (1, 1))])  # two left, one up
def test_an_integer_shift_moves_a_bright_pixel_exactly(shift, moved_to):
    out = warp(one_pixel(7, 6, 2, 3), shift=shift)
    expected = one_pixel(7, 6, *moved_to)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_rotation_is_about_the_centre_clockwise_as_displayed():
    # 9x9, centre (4, 4): the pixel 3 above the centre goes 3 to its right after 90 degrees.
    torch.testing.assert_close(warp(one_pixel(9, 9, 1, 4), angle=90.0), one_pixel(9, 9, 4, 7), rtol=0, atol=1e-5)
    # and scale 2 doubles its distance from the centre: 2 above -> 4 above
    torch.testing.assert_close(warp(one_pixel(9, 9, 2, 4), scale=2.0)[0, 0, 0, 4], torch.tensor(1.0), atol=1e-5,
                               rtol=0)


def test_shift_magnitude_is_a_fraction_of_the_size():
    # shift 0.1 of a 40-wide image: up to 4 pixels; the bright column's centre of mass stays within that
    img = torch.zeros(64, 1, 40, 40)
    img[:, :, :, 20] = 1.0
    out = random_warp(img, AffineAugment(rotation=0.0, shift=0.1, scale=(1.0, 1.0)), torch.Generator().manual_seed(0))
    cols = torch.arange(40, dtype=torch.float32)
    centre = (out.sum(dim=(1, 2)) * cols).sum(1) / out.sum(dim=(1, 2, 3))
    moved = centre - 20
    assert moved.abs().max() <= 4.0 + 1e-4
    assert moved.abs().max() > 2.0 and moved.min() < 0 < moved.max()  # both ways, most of the range


def test_same_seed_same_warps_other_seed_other_warps():
    rows = torch.rand(16, 64)
    layout = ImageLayout(1, 8, 8)

    def run(seed):
        return RowAugmenter(layout, AffineAugment(), torch.Generator().manual_seed(seed))(rows)

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.allclose(run(3), run(4))


def test_warped_digits_keep_their_class_while_their_pixels_change():
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    knn = KNeighborsClassifier(n_neighbors=1).fit(x[:1000], y[:1000])
    held_out = torch.from_numpy(x[1000:])
    warped = RowAugmenter(ImageLayout(1, 8, 8), AffineAugment(), torch.Generator().manual_seed(0))(held_out).numpy()
    changed = np.abs(warped - x[1000:]).mean(axis=1)
    assert np.all(changed > 0.01)                        # every image is different...
    assert np.mean(changed) > 0.05
    assert knn.score(warped, y[1000:]) > 0.8             # ...and still looks like its class


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_warps_run_on_the_batch_device_and_match_the_cpu():
    rows = torch.rand(32, 3 * 10 * 12)
    layout = ImageLayout.from_sample_shape((10, 12, 3))
    images = layout.to_images(rows)
    params = dict(angle=torch.linspace(-10, 10, 32), shift=torch.randn(32, 2), scale=torch.linspace(0.9, 1.1, 32))
    on_gpu = affine_warp(images.cuda(), **{k: v.cuda() for k, v in params.items()})
    torch.testing.assert_close(on_gpu.cpu(), affine_warp(images, **params), rtol=1e-4, atol=1e-4)
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = RowAugmenter(layout, AffineAugment(), gen)(rows.cuda())
    assert out.device.type == "cuda" and out.shape == rows.shape
