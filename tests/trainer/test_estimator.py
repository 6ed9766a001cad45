"""Training on small data: it learns, it is deterministic, and its bundle scores the same."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepclust.runtime import Assigner  # noqa: E402
from deepclust.runtime.bundle import GAUSSIAN_MIXTURE, load_bundle  # noqa: E402
from deepclust.runtime.errors import DeepclustError, InputError  # noqa: E402
from deepclust.runtime.preprocessing import Preprocessing  # noqa: E402
from deepclust.trainer.estimator import DeepClustering  # noqa: E402


def blobs(n=300, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    y = np.repeat(np.arange(k), n // k)
    return (centers[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32), y


def small(**kw):
    params = dict(hidden=(32, 32), latent_dim=3, epochs=15, batch_size=32, n_init=5, device="cpu")
    params.update(kw)
    return DeepClustering(3, **params)


def test_learns_separable_clusters():
    x, y = blobs()
    m = small().fit(x, y)
    assert m.metrics_["acc"] > 0.95
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    assert m.cluster_centers_.shape == (3, 3) and m.labels_.shape == (300,)


AS_IMAGES = (4, 5)  # blobs' 20 features read as 4x5 images, for the options that need images
FINE_TUNE = dict(update_interval=20, max_iter=60)


@pytest.mark.parametrize("options", [
    {},
    {"augment": True},
    {"acai": True},
    {"architecture": "conv", "filters": (4, 8, 8), "augment": True, "acai": True},
    {"augment": True, "method": "idec", **FINE_TUNE},
    {"augment": True, "method": "dcn", **FINE_TUNE},
    {"augment": True, "method": "dkm", **FINE_TUNE},
    {"augment": True, "method": "selflabel"},
    {"augment": True, "method": "selflabel", "student": "encoder"},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k not in FINE_TUNE) or "plain")
def test_same_seed_same_model_other_seed_other_model(options):
    x, _ = blobs()
    x = x.reshape(len(x), *AS_IMAGES)
    a, b, c = (small(seed=seed, epochs=5, **options).fit(x) for seed in (1, 1, 2))
    for pa_, pb in zip([*a.network_.parameters(), *a.embedder_.parameters()],
                       [*b.network_.parameters(), *b.embedder_.parameters()]):
        assert torch.equal(pa_, pb)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    untimed = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert untimed(a.history_) == untimed(b.history_)
    assert not torch.equal(next(a.network_.parameters()), next(c.network_.parameters()))


@pytest.mark.parametrize("option", ["augment", "acai"])
def test_augment_and_acai_change_what_is_learned(option):
    x = blobs()[0].reshape(300, *AS_IMAGES)
    plain, other = small(epochs=3).fit(x), small(epochs=3, **{option: True}).fit(x)
    assert not torch.equal(next(plain.network_.parameters()), next(other.network_.parameters()))


@pytest.mark.parametrize("student, kind", [("auto", "conv"), ("conv", "conv"), ("encoder", "encoder")])
def test_selflabel_ships_the_student_it_was_asked_for(tmp_path, student, kind):
    # "conv": a fresh convolutional encoder learns the teacher's labels and is what the bundle
    # holds; the dense autoencoder only taught. "encoder": the pretrained encoder itself.
    from deepclust.trainer.conv_autoencoder import ConvEncoder

    x, y = blobs()
    images = x.reshape(300, *AS_IMAGES)
    m = small(method="selflabel", student=student, filters=(4, 8, 8), epochs=5).fit(images, y)
    assert isinstance(m.embedder_, ConvEncoder) == (kind == "conv")
    assert (m.embedder_ is m.network_.encoder) == (kind == "encoder")
    assert m.fine_tune_["student"] == kind
    assert m.metrics_["acc"] > 0.95
    path = m.save(tmp_path / "b")
    assert load_bundle(path).manifest.method["params"]["student"] == student
    assert np.mean(Assigner.load(path, precision="fp32").assign(images).labels == m.labels_) >= 0.999


def test_the_head_student_ships_every_network_as_pretraining_left_it_under_a_trained_head(tmp_path):
    # "head": the networks the teacher read stay frozen (also in training mode, so batch norm
    # keeps its statistics); only a head on their features side by side learns, and the
    # bundle scores networks + head as one encoder.
    from deepclust.trainer.checkpoint import load_pretrained

    x, y = blobs()
    files = [tmp_path / "n0.npz", tmp_path / "n1.npz"]
    m = small(method="selflabel", student="head", pretrain_runs=2, epochs=5).fit(x, y, save_pretrained_to=files)
    networks = m.embedder_.networks
    assert len(networks) == 2 and m.fine_tune_["student"] == "head"
    for network, file in zip(networks, files):
        saved = load_pretrained(file).state
        for name, value in network.state_dict().items():
            assert torch.equal(value, saved[f"encoder.{name}"]), name
    m.embedder_.train()
    assert m.embedder_.head.training and not any(network.training for network in networks)
    assert m.metrics_["acc"] > 0.95
    path = m.save(tmp_path / "b")
    assert np.mean(Assigner.load(path).assign(x).labels == m.labels_) >= 0.999
    assert "int8" not in load_bundle(path).manifest.checks  # its int8 pipeline is the slower one
    before = m.transform(x)  # the second network is part of what ships
    with torch.no_grad():
        next(networks[1].parameters()).add_(1.0)
    assert not np.allclose(m.transform(x), before)


def test_student_is_for_selflabel_and_conv_needs_images():
    x, y = blobs()
    assert small(method="selflabel", epochs=2).fit(x, y).fine_tune_["student"] == "encoder"  # auto on a table
    with pytest.raises(DeepclustError, match=r"student='conv' needs image samples"):
        small(method="selflabel", student="conv", epochs=2).fit(x, y)
    with pytest.raises(DeepclustError, match=r"student='conv' applies to method='selflabel' only, not 'kmeans'"):
        small(student="conv").fit(x, y)
    with pytest.raises(DeepclustError, match=r"student='cnn' should be one of auto, encoder, conv, head"):
        small(method="selflabel", student="cnn").fit(x, y)


def test_teacher_runs_is_for_selflabel_and_reports_the_runs_agreement():
    x, y = blobs()
    m = small(method="selflabel", teacher_runs=2, epochs=2).fit(x, y)
    assert m.fine_tune_["teacher_runs"] == 2 and 0 < m.fine_tune_["unanimous"] <= 1
    assert m.fine_tune_["consensus_inits"] == 100     # the benchmark's records say how the consensus ran
    one_run = small(method="selflabel", epochs=2).fit(x, y).fine_tune_
    assert "teacher_runs" not in one_run and "consensus_inits" not in one_run
    with pytest.raises(DeepclustError, match=r"teacher_runs=2 applies to method='selflabel' only, not 'kmeans'"):
        small(teacher_runs=2).fit(x, y)
    with pytest.raises(DeepclustError, match=r"teacher_runs=0 should be an integer >= 1"):
        small(method="selflabel", teacher_runs=0).fit(x, y)


def test_teacher_inits_is_for_selflabel_and_recorded():
    x, y = blobs()
    assert small(method="selflabel", teacher_inits=3, epochs=2).fit(x, y).fine_tune_["teacher_inits"] == 3
    # None: one fit after an autoencoder (tests/trainer/test_contrastive.py: 30 after contrastive pretraining)
    assert small(method="selflabel", epochs=2).fit(x, y).fine_tune_["teacher_inits"] == 1
    with pytest.raises(DeepclustError, match=r"teacher_inits=3 applies to method='selflabel' only, not 'kmeans'"):
        small(teacher_inits=3).fit(x, y)
    with pytest.raises(DeepclustError, match=r"teacher_inits=0 should be an integer >= 1"):
        small(method="selflabel", teacher_inits=0).fit(x, y)


def test_student_ema_is_for_selflabel_ships_the_average_and_scores_the_last_weights_beside_it(tmp_path):
    x, y = blobs()
    m = small(method="selflabel", student_ema=0.5, epochs=2).fit(x, y)
    assert 0 <= m.fine_tune_["unaveraged_acc"] <= 1 and m.fine_tune_["ema_half_life"] == 0.5
    assert m.get_params()["student_ema"] == 0.5
    assert np.mean(Assigner.load(m.save(tmp_path / "b"), precision="fp32").assign(x).labels == m.labels_) >= 0.999
    plain = small(method="selflabel", epochs=2).fit(x, y).fine_tune_
    assert "unaveraged_acc" not in plain and "ema_half_life" not in plain
    with pytest.raises(DeepclustError, match=r"student_ema=0.5 applies to method='selflabel' only, not 'kmeans'"):
        small(student_ema=0.5).fit(x, y)
    with pytest.raises(DeepclustError, match=r"student_ema=-1 should be a number of epochs >= 0"):
        small(method="selflabel", student_ema=-1).fit(x, y)


def test_augment_needs_image_shaped_data():
    with pytest.raises(DeepclustError, match=r"augment=True needs image samples .* got sample shape \(20,\)"):
        small(augment=True).fit(blobs()[0])
    with pytest.raises(DeepclustError, match=r"augment='yes' should be True or False"):
        small(augment="yes").fit(blobs()[0])


def test_fit_does_not_disturb_the_global_torch_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    small(epochs=1).fit(blobs()[0])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_bundle_reproduces_trainer_assignments(tmp_path, method):
    x, y = blobs()
    m = small(method=method).fit(x, y)
    path = m.save(tmp_path / "b")
    checks = load_bundle(path).manifest.checks
    assert checks["label_agreement"] >= 0.999 and checks["embedding_max_rel_error"] < 1e-3
    runtime = Assigner.load(path, precision="fp32")
    assert np.mean(runtime.assign(x).labels == m.labels_) >= 0.999
    np.testing.assert_allclose(runtime.embed(x), m.transform(x), rtol=1e-4, atol=1e-4)
    if method == "gmm":
        assert load_bundle(path).manifest.assignment == GAUSSIAN_MIXTURE


def test_preprocessing_travels_with_the_bundle(tmp_path):
    from deepclust.runtime.preprocessing import Preprocessing

    x, y = blobs()
    raw = (x * 100 + 500).astype(np.float32)  # the runtime must undo this itself
    pre = Preprocessing(offset=500.0, scale=0.01)
    m = small().fit(raw, y, preprocessing=pre)
    path = m.save(tmp_path / "b")
    assert np.mean(Assigner.load(path).assign(raw).labels == m.labels_) >= 0.999


def test_a_table_is_z_scored_by_default_as_train_does():
    # One column of noise 1,000 times wider than the rest: at raw scale it is all the encoder sees.
    pd = pytest.importorskip("pandas")
    x, y = blobs(d=8)
    x = np.column_stack([x, np.random.default_rng(1).normal(0, 1000, len(x))])
    frame = pd.DataFrame(x, columns=[*"abcdefgh", "noise"])
    m = small().fit(frame, y)
    np.testing.assert_allclose(m.preprocessing_.offset, x.mean(axis=0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(1 / np.asarray(m.preprocessing_.scale), x.std(axis=0), rtol=1e-4)
    assert m.metrics_["acc"] > 0.95
    off = small().fit(frame, y, preprocessing=Preprocessing())  # what the old default did
    assert off.preprocessing_ == Preprocessing() and off.metrics_["acc"] < 0.8


def test_a_frame_with_a_vector_column_trains_a_bundle_that_reads_it_from_parquet(tmp_path):
    # Embeddings in one column of arrays: each element a feature, as a Parquet list column gives them
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from deepclust.runtime import score_file

    x, y = blobs(d=6)
    frame = pd.DataFrame({"emb": list(x[:, :4]), "a": x[:, 4], "b": x[:, 5]})
    m = small().fit(frame, y)
    assert m.feature_names_ == ("emb[0]", "emb[1]", "emb[2]", "emb[3]", "a", "b") and m.metrics_["acc"] > 0.95
    path = m.save(tmp_path / "bundle")
    pq.write_table(pa.table({"b": x[:, 5], "emb": pa.FixedSizeListArray.from_arrays(pa.array(x[:, :4].ravel()), 4),
                             "a": x[:, 4]}), tmp_path / "rows.parquet")
    score_file(Assigner.load(path, device="cpu"), tmp_path / "rows.parquet", tmp_path / "out.parquet")
    assert np.mean(pq.read_table(tmp_path / "out.parquet")["label"].to_numpy() == m.labels_) >= 0.999
    np.testing.assert_array_equal(Assigner.load(path, device="cpu").assign(frame).labels, m.predict(frame))
    gap = frame.astype({"emb": object})
    gap.at[5, "emb"] = pd.NA  # a missing vector, as pyarrow-backed frames hold it: was a TypeError
    with pytest.raises(InputError, match=r"row 5, column 'emb\[0\]', holds NaN, Inf or a missing value"):
        Assigner.load(path, device="cpu").assign(gap)


def test_a_missing_value_is_named_by_row_and_column():
    from deepclust.runtime.errors import InputError

    pd = pytest.importorskip("pandas")
    x, _ = blobs(d=3)
    frame = pd.DataFrame(x, columns=["a", "age", "c"])
    frame.loc[3, "age"] = np.nan  # was "X holds NaN or Inf values", wherever it was
    with pytest.raises(InputError, match=r"^X: row 3, column 'age', holds NaN, Inf or a missing value$"):
        small().fit(frame)


def test_parameter_errors_name_the_rule():
    x, _ = blobs(n=30)
    with pytest.raises(DeepclustError, match=r"the data has 2 row\(s\), fewer than the 3 clusters asked for"):
        small().fit(x[:2])
    with pytest.raises(DeepclustError, match="method='dbscan' should be one of kmeans, gmm"):
        small(method="dbscan").fit(x)
    with pytest.raises(DeepclustError, match="epochs=0 should be an integer >= 1"):
        small(epochs=0).fit(x)


def test_save_refuses_existing_bundle(tmp_path):
    x, _ = blobs()
    m = small(epochs=2).fit(x)
    m.save(tmp_path / "b")
    with pytest.raises(DeepclustError, match="already exists"):
        m.save(tmp_path / "b")


def test_manifest_records_method_versions_and_metrics(tmp_path):
    x, y = blobs()
    m = small(epochs=3).fit(x, y)
    manifest = json.loads((m.save(tmp_path / "b") / "manifest.json").read_text())
    assert manifest["method"]["name"] == "autoencoder+kmeans"
    assert manifest["method"]["params"]["hidden"] == [32, 32]
    assert {k: manifest["method"]["params"][k] for k in ("architecture", "filters", "augment", "acai")} == {
        "architecture": "dense", "filters": [32, 64, 128], "augment": False, "acai": False}
    assert manifest["metrics"]["acc"] == pytest.approx(m.metrics_["acc"])
    assert {"torch", "onnxruntime", "numpy"} <= set(manifest["versions"])


@pytest.mark.parametrize("normalize", [True, False])
def test_normalisation_is_part_of_the_exported_encoder(tmp_path, normalize):
    x, y = blobs()
    m = small(normalize=normalize).fit(x, y)
    norms = np.linalg.norm(Assigner.load(m.save(tmp_path / "b")).embed(x), axis=1)
    if normalize:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    else:
        assert np.ptp(norms) > 0.1


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("method", ["dec", "idec", "dcn", "dkm", "selflabel"])
def test_fine_tuning_methods_learn_and_export_with_parity(tmp_path, method, augment):
    x, y = blobs()
    x = x.reshape(len(x), *AS_IMAGES)
    m = small(method=method, update_interval=20, max_iter=300, augment=augment).fit(x, y)
    assert m.fine_tune_["batches" if method != "selflabel" else "epochs"] >= 1
    assert m.metrics_["acc"] > 0.9
    runtime = Assigner.load(m.save(tmp_path / "b"))
    assert np.mean(runtime.assign(x).labels == m.labels_) >= 0.999


def test_export_refuses_a_bundle_that_would_not_reproduce_the_trainer(tmp_path):
    x, y = blobs()
    m = small(epochs=3).fit(x, y)
    m._fit_sample_labels = (m._fit_sample_labels + 1) % 3  # what the runtime will not reproduce
    with pytest.raises(DeepclustError, match="labels agree on only 0.0000%"):
        m.save(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("init", ["kmeans", "gmm"])
def test_fine_tuning_starts_at_the_means_of_the_init_heads_partition(monkeypatch, init):
    from deepclust.trainer import estimator
    from deepclust.trainer.heads import HeadResult

    x, y = blobs()
    given = {}

    def fixed_partition(z, k, *, n_init, seed):  # stands in for the init head: a partition we know
        given["z"] = z
        return HeadResult(np.zeros((k, z.shape[1]), np.float32), np.arange(len(z)) % k)

    def record_start(autoencoder, project, x, centroids, config, **kw):
        given["centroids"] = centroids
        return centroids.astype(np.float32), np.arange(len(x)) % 3, {"batches": 0}

    monkeypatch.setitem(estimator.HEADS, init, fixed_partition)
    monkeypatch.setitem(estimator.FINE_TUNERS, "dec", (record_start, *estimator.FINE_TUNERS["dec"][1:]))
    m = small(method="dec", init=init, epochs=2).fit(x, y)
    z = m.transform(x)  # fine-tuning methods export the raw embedding; the fake fine-tune left it as pretrained
    np.testing.assert_allclose(np.linalg.norm(given["z"], axis=1), 1.0, rtol=1e-5)  # partitioned on directions
    expected = np.stack([z[np.arange(len(z)) % 3 == j].mean(axis=0) for j in range(3)])
    np.testing.assert_allclose(given["centroids"], expected, rtol=1e-5, atol=1e-6)


def test_init_must_be_a_head():
    x, _ = blobs(n=30)
    with pytest.raises(DeepclustError, match="init='dec' should be one of kmeans, gmm"):
        small(method="dec", init="dec").fit(x)


def test_scikit_learn_can_clone_it_and_set_its_parameters():
    from sklearn.base import clone

    m = small(hidden=[16, 8], seed=7)
    copy = clone(m)
    assert copy is not m and copy.get_params(deep=True) == m.get_params(deep=False)
    assert {"device", "verbose", "hidden"} <= set(m.get_params())
    assert copy.set_params(lr=0.01, n_clusters=4) is copy and (copy.lr, copy.n_clusters) == (0.01, 4)
    with pytest.raises(DeepclustError, match="'learning_rate' is not a parameter of DeepClustering"):
        copy.set_params(learning_rate=0.01)


@pytest.mark.parametrize("params, message", [
    ({"lr": "0.1"}, "lr='0.1' should be a number > 0"),
    ({"tol": None}, r"tol=None should be a number in \[0, 1\)"),
    ({"hidden": "32,32"}, "hidden='32,32' should hold widths >= 1"),
    ({"n_clusters": True}, "n_clusters=True should be an integer >= 2"),
    ({"n_clusters": 1}, "n_clusters=1 should be an integer >= 2"),
    ({"seed": 1.5}, r"seed=1.5 should be an integer from 0 to 2\*\*32 - 1"),
    ({"seed": -1}, r"seed=-1 should be an integer from 0 to 2\*\*32 - 1"),
    ({"seed": 2**32}, r"seed=4294967296 should be an integer from 0 to 2\*\*32 - 1"),
    ({"normalize": "no"}, "normalize='no' should be True or False"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_parameters_of_the_wrong_type_or_range_give_one_line_before_training(monkeypatch, params, message):
    from deepclust.trainer import estimator

    monkeypatch.setattr(estimator, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretraining ran"))
    x, _ = blobs(n=30)
    with pytest.raises(DeepclustError, match=f"^{message}"):
        DeepClustering(**{"n_clusters": 3, "device": "cpu", **params}).fit(x)


def test_labels_of_another_length_are_refused_before_training(monkeypatch):
    from deepclust.trainer import estimator

    monkeypatch.setattr(estimator, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretraining ran"))
    x, y = blobs(n=30)
    with pytest.raises(DeepclustError, match=r"y has shape \(10,\), but X has 30 rows"):
        small().fit(x, y[:10])


def test_transform_before_fit_says_so():
    with pytest.raises(DeepclustError, match="not fitted yet; call fit first"):
        small().transform(blobs(n=30)[0])


def test_selflabel_needs_two_rows_more_than_clusters_before_training(monkeypatch):
    # UMAP's spectral start solves for k + 1 eigenvectors of the rows' graph: with 8 rows and
    # k = 7 it failed after pretraining.
    from deepclust.trainer import estimator

    monkeypatch.setattr(estimator, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretraining ran"))
    x = blobs(n=30)[0][:8]
    with pytest.raises(DeepclustError, match="method='selflabel' needs n_samples >= n_clusters \\+ 2 = 9"):
        DeepClustering(7, method="selflabel", device="cpu").fit(x)


@pytest.fixture(scope="module")
def fitted():
    return small(epochs=1).fit(blobs(n=60)[0])


@pytest.mark.parametrize("existing", ["user folder", "file"])
def test_save_overwrite_refuses_what_is_not_a_bundle_and_leaves_nothing(tmp_path, fitted, existing):
    target = tmp_path / "b"
    if existing == "file":
        target.write_text("user data")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("user data")
    with pytest.raises(DeepclustError, match="b: not a model bundle; --overwrite replaces only a bundle folder"):
        fitted.save(target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert (target if existing == "file" else target / "notes.txt").read_text() == "user data"


def test_save_overwrite_replaces_a_bundle_or_an_empty_folder(tmp_path, fitted):
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty", overwrite=True)
    fitted.save(tmp_path / "bundle")
    fitted.save(tmp_path / "bundle", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "empty"]
    assert all(load_bundle(tmp_path / name).manifest.k == 3 for name in ("bundle", "empty"))


def test_data_with_fewer_distinct_rows_than_clusters_is_refused_before_training(monkeypatch):
    from deepclust.trainer import estimator

    monkeypatch.setattr(estimator, "pretrain_autoencoder", lambda *a, **k: pytest.fail("pretraining ran"))
    x = np.ones((40, 5), np.float32)
    x[::2] = 2  # two distinct rows for three clusters
    with pytest.raises(DeepclustError, match="the data has 2 distinct row"):
        small().fit(x)


def test_method_auto_says_the_estimator_names_its_method():
    with pytest.raises(DeepclustError, match="'auto' is the CLI's choice: name the method here"):
        small(method="auto").fit(blobs(n=30)[0])


def test_a_failed_or_interrupted_refit_leaves_the_last_fit_and_a_good_one_keeps_nothing_of_it(monkeypatch):
    import deepclust.trainer.estimator as estimator
    from deepclust.runtime.errors import InputError

    x, y = blobs()
    names = [f"f{j}" for j in range(x.shape[1])]
    m = small(method="dec", **FINE_TUNE).fit(x, y, feature_names=names)
    state = {k: v for k, v in vars(m).items() if k.endswith("_")}
    z = m.transform(x)
    bad = x.copy()
    bad[5, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):  # refused after the new names and preprocessing were read
        m.fit(bad, feature_names=names[::-1])
    real = estimator.pretrain_autoencoder

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(estimator, "pretrain_autoencoder", ctrl_c)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in a notebook, mid-refit
        m.fit(x + 100)
    assert m.feature_names_ == tuple(names) and {k: v for k, v in vars(m).items() if k.endswith("_")} == state
    np.testing.assert_array_equal(m.transform(x), z)
    monkeypatch.setattr(estimator, "pretrain_autoencoder", real)
    m.set_params(method="kmeans").fit(x)
    assert not hasattr(m, "fine_tune_") and m.feature_names_ is None  # nothing of the DEC fit stays


def test_a_data_frames_columns_are_its_feature_names_read_by_name(tmp_path):
    pd = pytest.importorskip("pandas")
    x, _ = blobs()
    df = pd.DataFrame(x, columns=[f"c{j}" for j in range(x.shape[1])])
    df["c0"] = pd.array(np.round(x[:, 0]).astype(int), dtype="Int64")  # a nullable column is a number too
    m = small().fit(df)
    assert m.feature_names_ == tuple(df.columns)
    shuffled = df[df.columns[::-1]]
    np.testing.assert_array_equal(m.transform(shuffled), m.transform(df))
    m.save(tmp_path / "b")
    assert load_bundle(tmp_path / "b").manifest.input.feature_names == tuple(df.columns)
    np.testing.assert_array_equal(Assigner.load(tmp_path / "b").assign(shuffled).labels, m.labels_)


def test_inputs_are_checked_before_training(monkeypatch):
    import deepclust.trainer.estimator as estimator
    from deepclust.runtime.errors import InputError

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained before checking its inputs")

    monkeypatch.setattr(estimator, "pretrain_autoencoder", must_not_train)
    x, y = blobs()
    pd = pytest.importorskip("pandas")
    nullable = pd.Series(y, dtype="Int64")
    nullable[7] = pd.NA
    for labels in (np.where(np.arange(len(y)) == 7, np.nan, y), [None if i == 7 else v for i, v in enumerate(y)],
                   nullable):
        with pytest.raises(InputError, match="y has no label at row 7"):
            small().fit(x, labels)
    with pytest.raises(InputError, match="feature_names: 2 names, but X has 20 features"):
        small().fit(x, feature_names=["a", "b"])
    with pytest.raises(InputError, match="feature_names: give each feature its own name"):
        small().fit(x, feature_names=["a"] * 20)
    with pytest.raises(InputError, match="X has no features"):
        small().fit(np.zeros((10, 0)))


def test_transform_checks_its_rows():
    from deepclust.runtime.errors import InputError

    x, _ = blobs()
    m = small(epochs=2).fit(x)
    with pytest.raises(InputError, match=r"X has rows of shape \(10,\), but the model was fitted on \(20,\)"):
        m.transform(x[:, :10])
    bad = x[:3].copy()
    bad[1, 1] = np.inf
    with pytest.raises(InputError, match="X: row 1 holds NaN, Inf or a missing value"):
        m.transform(bad)
    assert m.transform(x[:0]).shape == (0, 3)


def test_a_column_float32_cannot_resolve_is_named(caplog):
    from deepclust.runtime.preprocessing import Preprocessing

    rng = np.random.default_rng(0)
    x, _ = blobs()
    ms = 1_700_000_000_000 + rng.normal(0, 5_000, len(x))  # epoch milliseconds: float32 steps of 131,072 there
    centred = Preprocessing(offset=(0.0,) * 20 + (1.7e12,), scale=(1.0,) * 21)  # too late: rows are float32 by then
    with caplog.at_level("WARNING", logger="deepclust"):
        small(epochs=1).fit(np.column_stack([x, ms]), feature_names=[*(f"f{j}" for j in range(20)), "t_ms"],
                            preprocessing=centred)
    warned = [r.getMessage() for r in caplog.records if "float32" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("column 't_ms': its values")


def test_fit_predict_gives_the_fits_labels_and_repr_shows_what_differs():
    x, _ = blobs()
    m = small(epochs=2, seed=4)
    labels = m.fit_predict(x)
    np.testing.assert_array_equal(labels, m.labels_)
    assert repr(m) == ("DeepClustering(n_clusters=3, latent_dim=3, hidden=(32, 32), epochs=2, batch_size=32, "
                       "n_init=5, seed=4, device='cpu')")


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_predict_labels_new_rows_as_the_saved_bundle_does(tmp_path, method):
    x, _ = blobs()
    new, _ = blobs(seed=1)
    m = small(method=method).fit(x)
    assert (m.predict(x) == m.labels_).mean() >= 0.999
    m.save(tmp_path / "b")
    assert (m.predict(new) == Assigner.load(tmp_path / "b", precision="fp32").assign(new).labels).mean() >= 0.999
