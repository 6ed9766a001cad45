"""The fine-tuning methods with augmentation: each step warps the clean rows of its batch once,
and the labels returned are those of the clean data."""

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from deepclust.trainer import dcn, dec, dkm  # noqa: E402
from deepclust.trainer.autoencoder import DenseAutoencoder  # noqa: E402
from deepclust.trainer.finetune import embed_all, nearest  # noqa: E402

METHODS = {"dec": (dec.fine_tune, dec.DECConfig()), "idec": (dec.fine_tune, dec.DECConfig(reconstruct=True)),
           "dcn": (dcn.fine_tune, dcn.DCNConfig()), "dkm": (dkm.fine_tune, dkm.DKMConfig())}


class Spy:
    """An augmentation that records what it is given and adds a little noise."""

    def __init__(self, x):
        self.x, self.calls = x, 0

    def __call__(self, xb):
        self.calls += 1
        # every row handed over is a clean training row
        assert bool((xb[:, None] == self.x[None]).all(dim=2).any(dim=1).all())
        return xb + 0.01 * torch.randn(xb.shape, generator=torch.Generator().manual_seed(self.calls))


@pytest.mark.parametrize("name", METHODS)
def test_each_step_augments_its_clean_batch_once(name):
    run, config = METHODS[name]
    config = replace(config, update_interval=5, max_batches=12, batch_size=16, tol=0.0)
    torch.manual_seed(0)
    x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
    ae = DenseAutoencoder(6, (8,), 2)
    init = embed_all(ae, nn.Identity(), x)[:3].numpy()
    spy = Spy(x)
    centroids, labels, stats = run(ae, nn.Identity(), x, init, config, generator=torch.Generator().manual_seed(0),
                                   augment=spy)
    assert spy.calls == stats["batches"] == 12
    # the labels returned are the clean data's under the final weights, as the bundle will assign them
    np.testing.assert_array_equal(labels, nearest(embed_all(ae, nn.Identity(), x), torch.from_numpy(centroids)).numpy())


def test_an_empty_mixture_component_starts_at_a_row_not_at_nan(caplog):
    # 300 noise rows, k = 40: the Gaussian mixture leaves 4 components without a row; their
    # means of no rows were NaN, and the whole fine-tuning ran before export refused them.
    from deepclust.trainer.finetune import starting_partition
    from deepclust.trainer.heads import fit_gmm

    rng = np.random.default_rng(0)
    rng.normal(size=(300, 3))  # the audit's first draw: no empty component
    z = rng.normal(size=(300, 3)).astype(np.float32)
    gmm_labels = fit_gmm(z, 40, n_init=2, seed=1).labels
    assert len(np.unique(gmm_labels)) < 40
    start = starting_partition(z, 40, init="gmm", normalize=False, n_init=2, seed=1)
    assert np.isfinite(start.centroids).all() and sorted(np.unique(start.labels)) == list(range(40))
    moved = np.flatnonzero(start.labels != gmm_labels)  # one row for each empty component, its centroid
    empty = sorted(set(range(40)) - set(gmm_labels.tolist()))
    assert sorted(start.labels[moved].tolist()) == empty
    np.testing.assert_array_equal(start.centroids[start.labels[moved]], z[moved])
    assert "--init gmm left 4 of 40 clusters empty" in caplog.text
