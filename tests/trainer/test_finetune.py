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
