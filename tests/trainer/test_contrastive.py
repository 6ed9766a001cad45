"""Contrastive pretraining: SimCLR's loss, the random views, the encoder, and the estimator's option."""

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepclust.runtime import Assigner  # noqa: E402
from deepclust.runtime.bundle import load_bundle  # noqa: E402
from deepclust.runtime.errors import DeepclustError  # noqa: E402
from deepclust.trainer.checkpoint import Pretrained, load_pretrained, save_pretrained  # noqa: E402
from deepclust.trainer.contrastive import (ContrastiveEncoder, ContrastiveNet, ContrastiveViews,  # noqa: E402
                                           named_views, nt_xent, pretrain_contrastive, random_view)
from deepclust.trainer.estimator import DeepClustering  # noqa: E402
from deepclust.trainer.images import ImageLayout  # noqa: E402

STILL = ContrastiveViews(rotation=0.0, shift=0.0, zoom=(1.0, 1.0), hflip=0.0, contrast=(1.0, 1.0), cutout=0)


def blobs(n=300, k=3, seed=0):
    """k clusters of 8x8 'images' in [0, 1]: a random pattern per cluster plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 1, (k, 8, 8))
    y = np.repeat(np.arange(k), n // k)
    return np.clip(patterns[y] + rng.normal(0, 0.1, (len(y), 8, 8)), 0, 1).astype(np.float32), y


def test_mild_views_warp_less_and_never_blank_a_square():
    # Bright 28x28 images, views without shift or contrast change: only zoom, rotation and
    # cutout act. Cutout blanks pixels inside the middle of some strong views; zoom and
    # rotation alone never reach it (a dark middle pixel can only come from cutout).
    images = torch.ones(400, 1, 28, 28)
    middle = (slice(None), 0, slice(9, 19), slice(9, 19))

    def darkened(name):
        views = replace(named_views(name, hflip=False), shift=0.0, contrast=(1.0, 1.0))
        return (random_view(images, views, torch.Generator().manual_seed(0))[middle] < 0.5).flatten(1).any(1)

    assert darkened("mild").sum() == 0 and 20 < darkened("strong").sum() < 200
    mild = named_views("mild", hflip=True)
    assert mild.hflip == 0.5 and mild.rotation < ContrastiveViews().rotation and mild.zoom[1] < ContrastiveViews().zoom[1]
    assert named_views("strong", hflip=False) == ContrastiveViews()


def test_nt_xent_matches_a_hand_computed_value():
    # Two images whose views project to e1 and e2 (scaled: only directions count). Each of
    # the four projections sees its partner at cosine 1 and the two others at cosine 0:
    # loss = -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t)).
    a = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = 0.5
    assert float(nt_xent(a, b, t)) == pytest.approx(math.log(1 + 2 * math.exp(-1 / t)), rel=1e-6)


def test_nt_xent_rewards_views_that_find_their_partner():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=g)
    close = a + 0.05 * torch.randn(16, 8, generator=g)
    assert nt_xent(a, close) < nt_xent(a, close[torch.roll(torch.arange(16), 1)])


def test_a_view_without_any_change_is_the_image_and_hflip_mirrors_exactly():
    images = torch.rand(5, 1, 8, 6, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_view(images, STILL, g), images, atol=1e-6, rtol=0)
    mirrored = random_view(images, ContrastiveViews(**{**STILL.__dict__, "hflip": 1.0}), g)
    torch.testing.assert_close(mirrored, images.flip(3), atol=1e-6, rtol=0)


def test_views_are_seeded_keep_shape_and_stay_in_range():
    images = torch.rand(64, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    one, two = (random_view(images, ContrastiveViews(hflip=0.5), torch.Generator().manual_seed(7)) for _ in range(2))
    other = random_view(images, ContrastiveViews(hflip=0.5), torch.Generator().manual_seed(8))
    assert one.shape == images.shape and torch.equal(one, two) and not torch.equal(one, other)
    assert float(one.min()) >= min(0.0, float(images.min())) and float(one.max()) <= float(images.max())


def test_cutout_blanks_one_square_in_about_half_the_views():
    ones = torch.ones(400, 1, 16, 16)
    views = random_view(ones, ContrastiveViews(**{**STILL.__dict__, "cutout": 4}), torch.Generator().manual_seed(0))
    blanked = (views == 0).flatten(1).sum(1)
    assert 0.4 < float((blanked > 0).float().mean()) < 0.6
    assert int(blanked.max()) == 16                        # a whole 4x4 square inside the image
    for image in views[blanked > 0][:20, 0]:               # and one rectangle (clipped at the border)
        rows, cols = torch.nonzero(image == 0, as_tuple=True)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_encoder_takes_flat_rows_and_refuses_images_too_small_for_its_poolings():
    layout = ImageLayout.from_sample_shape((28, 28))
    assert ContrastiveEncoder(layout).eval()(torch.rand(4, 784)).shape == (4, 128)
    with pytest.raises(DeepclustError, match=r"3 2x2 poolings leave nothing of a 4x4 image \(it needs at least 8x8\)"):
        ContrastiveEncoder(ImageLayout.from_sample_shape((4, 4)))


def test_pretraining_lowers_the_loss_and_repeats_for_a_seed():
    x = torch.from_numpy(blobs()[0].reshape(300, 64))
    layout = ImageLayout.from_sample_shape((8, 8))
    nets, histories = [], []
    for _ in range(2):
        torch.manual_seed(0)
        net = ContrastiveNet(layout, widths=(8, 8, 8))
        histories.append(pretrain_contrastive(net, x, epochs=6, batch_size=64, lr=1e-3,
                                              generator=torch.Generator().manual_seed(0)))
        nets.append(net)
    losses = [h["loss"] for h in histories[0]]
    assert losses[-1] < losses[0] and len(losses) == 6
    assert [h["loss"] for h in histories[1]] == losses
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    with pytest.raises(DeepclustError, match=r"at least batch_size=512 rows .* got 300; lower the batch size"):
        pretrain_contrastive(nets[0], x, epochs=1, batch_size=512, lr=1e-3, generator=torch.Generator())


def small(**kw):
    params = dict(n_clusters=3, pretraining="contrastive", epochs=8, batch_size=64, n_init=3, device="cpu", seed=0)
    params.update(kw)
    return DeepClustering(**params)


@pytest.mark.parametrize("method", ["kmeans", "selflabel"])
def test_contrastive_fit_clusters_and_its_bundle_scores_the_same(tmp_path, method):
    x, y = blobs()
    m = small(method=method, filters=(4, 8, 8), hflip=True).fit(x, y)
    assert m.metrics_["acc"] > 0.8                                      # chance: ~0.4
    path = m.save(tmp_path / "b", int8=False)
    manifest = load_bundle(path).manifest
    assert manifest.method["name"] == f"contrastive+{method}"
    assert manifest.latent_dim == (128 if method == "kmeans" else 10)   # kmeans clusters the 128-d features
    assert np.mean(Assigner.load(path, precision="fp32").assign(x).labels == m.labels_) >= 0.999
    if method == "selflabel":   # the likeliest of 30 GMM fits teaches after contrastive pretraining
        assert m.fine_tune_["teacher_inits"] == 30


def test_resuming_a_contrastive_pretraining_equals_a_fit_from_scratch(tmp_path):
    x, y = blobs()
    small().fit(x, y, save_pretrained_to=tmp_path / "net.npz")
    scratch = small(method="gmm").fit(x, y)
    resumed = small(method="gmm").fit(x, y, pretrained=tmp_path / "net.npz")
    np.testing.assert_array_equal(resumed.labels_, scratch.labels_)
    assert all(torch.equal(p, q) for p, q in zip(resumed.network_.parameters(), scratch.network_.parameters()))
    with pytest.raises(DeepclustError, match=r"pretrained with hflip=False, but this fit has hflip=True"):
        small(hflip=True).fit(x, y, pretrained=tmp_path / "net.npz")
    with pytest.raises(DeepclustError, match=r"pretrained with views='strong', but this fit has views='mild'"):
        small(views="mild").fit(x, y, pretrained=tmp_path / "net.npz")
    with pytest.raises(DeepclustError, match=r"pretrained with .*=.*, but this fit has"):
        DeepClustering(3, epochs=8, batch_size=64, seed=0).fit(x, y, pretrained=tmp_path / "net.npz")


def test_a_contrastive_file_saved_before_views_could_be_chosen_reads_as_strong_views(tmp_path):
    old = {"pretraining": "contrastive", "hflip": True, "epochs": 30, "batch_size": 256, "lr": 1e-3, "seed": 0,
           "sample_shape": [28, 28]}
    empty = torch.zeros(0)
    save_pretrained(tmp_path / "old.npz", Pretrained(old, "0" * 64, {}, empty, empty, "cpu", [], 1.0))
    assert load_pretrained(tmp_path / "old.npz").options == {**old, "views": "strong"}
    autoencoder = {"architecture": "dense", "seed": 0}
    save_pretrained(tmp_path / "ae.npz", Pretrained(autoencoder, "0" * 64, {}, empty, empty, "cpu", [], 1.0))
    assert load_pretrained(tmp_path / "ae.npz").options == autoencoder


def test_contrastive_options_are_checked():
    x, y = blobs()
    with pytest.raises(DeepclustError, match=r"method='dec' fine-tunes an autoencoder.*use kmeans, gmm, selflabel"):
        small(method="dec").fit(x)
    with pytest.raises(DeepclustError, match=r"acai=True regularises an autoencoder"):
        small(acai=True).fit(x)
    with pytest.raises(DeepclustError, match=r"hflip=True applies to pretraining='contrastive' only"):
        small(pretraining="autoencoder", hflip=True).fit(x)
    with pytest.raises(DeepclustError, match=r"views='wide' should be one of strong, mild"):
        small(views="wide").fit(x)
    with pytest.raises(DeepclustError, match=r"views='mild' applies to pretraining='contrastive' only"):
        small(pretraining="autoencoder", views="mild").fit(x)
    with pytest.raises(DeepclustError, match=r"hflip='yes' should be True or False"):
        small(pretraining="autoencoder", hflip="yes").fit(x)
    with pytest.raises(DeepclustError, match=r"pretraining='simclr' should be one of autoencoder, contrastive"):
        small(pretraining="simclr").fit(x)
    with pytest.raises(DeepclustError, match=r"pretraining='contrastive' needs image samples .* got sample shape \(64,\)"):
        small().fit(x.reshape(300, 64))


def test_pretrain_runs_pretrain_each_network_as_its_own_fit_would_and_all_teach(tmp_path, monkeypatch):
    import deepclust.trainer.selflabel as selflabel
    from deepclust.trainer.checkpoint import load_pretrained
    from deepclust.trainer.seeds import run_seed

    x, y = blobs()
    taught = []
    plain = selflabel.teach

    def recording(embeddings, k, config, *, seed, progress=None):
        taught.append(len(embeddings))
        return plain(embeddings, k, config, seed=seed, progress=progress)

    monkeypatch.setattr(selflabel, "teach", recording)
    files = [tmp_path / "first.npz", tmp_path / "second.npz"]
    ensemble = small(method="selflabel", filters=(4, 8, 8), pretrain_runs=2).fit(x, y, save_pretrained_to=files)
    assert taught == [2] and ensemble.fine_tune_["pretrain_runs"] == 2
    # Each file is the network that a one-network fit with that seed pretrains.
    for path, seed in zip(files, [0, run_seed(0, 1)]):
        small(seed=seed).fit(x, save_pretrained_to=tmp_path / "alone.npz")
        alone, member = load_pretrained(tmp_path / "alone.npz"), load_pretrained(path)
        assert member.options == alone.options and member.options["seed"] == seed
        assert all(torch.equal(member.state[name], alone.state[name]) for name in alone.state)
    # Starting from the files gives the same model as pretraining both again.
    resumed = small(method="selflabel", filters=(4, 8, 8), pretrain_runs=2).fit(x, y, pretrained=files)
    np.testing.assert_array_equal(resumed.labels_, ensemble.labels_)
    with pytest.raises(DeepclustError, match=r"pretrained: 1 file\(s\) for pretrain_runs=2"):
        small(method="selflabel", pretrain_runs=2).fit(x, y, pretrained=files[0])
    with pytest.raises(DeepclustError, match=r"pretrain_runs=2 applies to method='selflabel' only"):
        small(method="kmeans", pretrain_runs=2).fit(x)
