"""A pretrained network file: resuming from it equals a fit from scratch, and a file from
other options or other data is refused."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepclust.runtime.errors import DeepclustError  # noqa: E402
from deepclust.trainer.checkpoint import load_pretrained  # noqa: E402
from deepclust.trainer.estimator import DeepClustering  # noqa: E402

FINE_TUNE = dict(update_interval=20, max_iter=60)


def blobs(n=240, d=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    y = np.repeat(np.arange(k), n // k)
    return (centers[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32).reshape(n, 4, 4), y


def small(**kw):
    params = dict(hidden=(32, 32), latent_dim=3, epochs=4, batch_size=32, n_init=3, device="cpu", seed=3)
    params.update(kw)
    return DeepClustering(3, **params)


@pytest.mark.parametrize("method, options", [
    ("dec", {}), ("idec", {"augment": True}), ("dcn", {}), ("dkm", {"acai": True}), ("gmm", {}),
    ("selflabel", {"augment": True}),  # its conv student is built after the file is loaded
], ids=lambda v: v if isinstance(v, str) else "-".join(v) or "plain")
def test_resuming_from_the_file_equals_a_fit_from_scratch(tmp_path, method, options):
    # The file is written by a k-means fit; another head resumed from it must match that
    # head fitted from scratch bit for bit (weights, generators and history all carried).
    x, y = blobs()
    small(**options).fit(x, y, save_pretrained_to=tmp_path / "ae.npz")
    scratch = small(method=method, **options, **FINE_TUNE).fit(x, y)
    resumed = small(method=method, **options, **FINE_TUNE).fit(x, y, pretrained=tmp_path / "ae.npz")
    np.testing.assert_array_equal(resumed.labels_, scratch.labels_)
    np.testing.assert_array_equal(resumed.cluster_centers_, scratch.cluster_centers_)
    for a, b in zip([*resumed.network_.parameters(), *resumed.embedder_.parameters()],
                    [*scratch.network_.parameters(), *scratch.embedder_.parameters()]):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed.history_) == strip(scratch.history_)
    assert resumed.timings_["pretrain_seconds"] == load_pretrained(tmp_path / "ae.npz").seconds


def test_resumed_fit_skips_pretraining(tmp_path, monkeypatch):
    x, y = blobs()
    small().fit(x, y, save_pretrained_to=tmp_path / "ae.npz")
    import deepclust.trainer.estimator as estimator

    def fail(*args, **kwargs):
        raise AssertionError("pretraining ran")

    monkeypatch.setattr(estimator, "pretrain_autoencoder", fail)
    assert small(method="dec", **FINE_TUNE).fit(x, y, pretrained=tmp_path / "ae.npz").labels_.shape == (240,)


@pytest.mark.parametrize("change, named, advice", [
    ({"epochs": 5}, "epochs=4", "pass --epochs 4"), ({"seed": 4}, "seed=3", "use the same pretraining options"),
    ({"hidden": (32, 16)}, "widths", "pass --hidden 32,32"), ({"augment": True}, "augment=False", "pass --no-augment"),
    ({"latent_dim": 4}, "latent_dim=3", "pass --latent-dim 3"), ({"lr": 0.01}, "lr=0.001", "pass --lr 0.001"),
])
def test_other_pretraining_options_are_refused_by_name_and_the_option_to_pass(tmp_path, change, named, advice):
    # The CLI user needs the flag: --method auto turns --augment on for images, other methods do not.
    x, y = blobs()
    small().fit(x, y, save_pretrained_to=tmp_path / "ae.npz")
    with pytest.raises(DeepclustError, match=f"{named}.*; {advice}"):
        small(**change).fit(x, y, pretrained=tmp_path / "ae.npz")


def test_a_file_without_augment_names_the_flag_that_turns_it_on():
    from deepclust.trainer.checkpoint import Pretrained

    saved = Pretrained({"augment": True}, "0" * 64, {}, torch.zeros(1), torch.zeros(1), "cpu", [], 0.0)
    with pytest.raises(DeepclustError, match="ae.npz: pretrained with augment=True, but this fit has augment=False; "
                                             "pass --augment to start from it, or pretrain anew"):
        saved.check_compatible({"augment": False}, "0" * 64, "ae.npz")


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_save_path_that_cannot_be_written_is_refused_before_pretraining(tmp_path, monkeypatch, where):
    import deepclust.trainer.estimator as estimator

    monkeypatch.setattr(estimator, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretraining ran"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("mine")
    path, match = {"a folder": (tmp_path / "folder", "is a folder"),
                   "under a file": (tmp_path / "file" / "ae.npz", "file is a file, not a folder")}[where]
    with pytest.raises(DeepclustError, match=match):
        small().fit(*blobs(), save_pretrained_to=path)


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    from deepclust.trainer.checkpoint import Pretrained, save_pretrained

    (tmp_path / "ae.npz").mkdir()  # os.replace cannot put a file there
    saved = Pretrained({}, "0" * 64, {"w": torch.zeros(2)}, torch.zeros(1), torch.zeros(1), "cpu", [], 0.0)
    with pytest.raises(DeepclustError, match="ae.npz: cannot write the pretrained network"):
        save_pretrained(tmp_path / "ae.npz", saved)
    assert [p.name for p in tmp_path.iterdir()] == ["ae.npz"]


def test_other_data_is_refused(tmp_path):
    x, y = blobs()
    small().fit(x, y, save_pretrained_to=tmp_path / "ae.npz")
    other = x.copy()
    other[0, 0, 0] += 1
    with pytest.raises(DeepclustError, match="different data"):
        small().fit(other, y, pretrained=tmp_path / "ae.npz")


def test_unreadable_or_foreign_files_give_one_line(tmp_path):
    x, y = blobs()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "foreign.npz", meta=np.array('{"format": "other"}'))
    for name, match in [("junk.npz", "not a readable"), ("foreign.npz", "not a deepclust pretrained"),
                        ("missing.npz", "no such")]:
        with pytest.raises(DeepclustError, match=match):
            small().fit(x, y, pretrained=tmp_path / name)


def test_writing_is_atomic_and_loading_never_unpickles(tmp_path):
    x, y = blobs()
    small().fit(x, y, save_pretrained_to=tmp_path / "ae.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["ae.npz"]
    with np.load(tmp_path / "ae.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
