"""Self-labelling: the N2D teacher finds manifold clusters k-means cannot, and the student
(encoder + centroids) learns the teacher's confident labels."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("umap")
from deepclust.runtime.errors import DeepclustError  # noqa: E402
from deepclust.trainer.autoencoder import DenseAutoencoder  # noqa: E402
from deepclust.trainer.metrics import cluster_accuracy  # noqa: E402
from deepclust.trainer.seeds import run_seed  # noqa: E402
from deepclust.trainer.selflabel import SelfLabelConfig, Teacher, consensus, fine_tune, mixture, teach  # noqa: E402
from deepclust.trainer.selflabel import _n2d as plain_n2d  # noqa: E402  (the teacher run, unrecorded)


def rings(n=600, seed=0):
    """Two concentric noisy circles: k-means cuts them in half, a neighbour graph does not."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 0, 1.0, 3.0) + rng.normal(0, 0.1, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32), y


def test_teacher_separates_rings_that_kmeans_cuts_in_half():
    from sklearn.cluster import KMeans

    z, y = rings()
    assert cluster_accuracy(y, KMeans(2, n_init=5, random_state=0).fit_predict(z)) < 0.7
    # The default graph (20 neighbours). With 10, umap-learn 0.5.12 lays each ring out as a
    # loop so long that the GMM cuts one of them for some seeds.
    for seed in (0, 1):
        teacher = teach(z, 2, SelfLabelConfig(), seed=seed)
        assert cluster_accuracy(y, teacher.labels) > 0.99
    assert teacher.confidence.shape == (len(z),) and (teacher.confidence <= 1).all()


def blobs(n=300, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    return (rng.normal(0, 4, (k, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def student(x, teacher, **config):
    torch.manual_seed(0)
    ae = DenseAutoencoder(x.shape[1], (32,), 3)
    options = {"epochs": 30, "batch_size": 32, "lr": 3e-3, **config}
    x = torch.from_numpy(x)
    return fine_tune(ae.encoder, x, teacher, SelfLabelConfig(**options), generator=torch.Generator().manual_seed(0))


def test_student_learns_the_confident_labels_and_ignores_the_rest():
    # A teacher right on 80% of rows, confidently, and wrong on 20%, unsure: the student,
    # trained on the sure rows only, gets the unsure ones right from the encoder's view.
    x, y = blobs()
    rng = np.random.default_rng(1)
    wrong = rng.random(len(y)) < 0.2
    labels = np.where(wrong, (y + 1) % 3, y)
    centroids, learned, info = student(x, Teacher(labels, np.where(wrong, 0.5, 1.0)), confidence=0.99)
    assert info["kept"] == pytest.approx(1 - wrong.mean())
    assert (learned == y).mean() > 0.98
    assert centroids.shape == (3, 3)
    # the same teacher trusted everywhere: the student now learns some of the wrong labels
    _, trusting, _ = student(x, Teacher(labels, np.ones(len(y))), confidence=0.99)
    assert (trusting == y).mean() < (learned == y).mean()


def test_a_cluster_without_confident_rows_is_refused():
    x, y = blobs()
    confidence = np.where(y == 2, 0.5, 1.0)
    with pytest.raises(DeepclustError, match=r"cluster\(s\) \[2\]"):
        student(x, Teacher(y, confidence), confidence=0.99)


def test_consensus_recovers_the_partition_that_each_run_gets_partly_wrong():
    # Three runs, each with its own labels' names and its own 15% of rows in a wrong cluster:
    # no run is right, their consensus is, and agreement counts the runs that concur.
    from deepclust.trainer.selflabel import consensus

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 150)
    runs, wrong = [], []
    for names in ([0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]):
        w = rng.random(len(truth)) < 0.15
        runs.append(np.array(names)[np.where(w, (truth + 1 + rng.integers(0, 3, len(truth))) % 4, truth)])
        wrong.append(w)
    assert all(cluster_accuracy(truth, r) < 0.9 for r in runs)
    teacher = consensus(runs, 4, seed=0)
    n_wrong = np.sum(wrong, axis=0)
    # named like the truth: each consensus cluster after the class most of it holds
    named = np.array([np.bincount(truth[teacher.labels == c]).argmax() for c in range(4)])[teacher.labels]
    assert (named[n_wrong <= 1] == truth[n_wrong <= 1]).all()      # a majority of runs right: right
    assert cluster_accuracy(truth, teacher.labels) > max(cluster_accuracy(truth, r) for r in runs) + 0.05
    right = named == truth
    np.testing.assert_allclose(teacher.agreement[right], 1 - n_wrong[right] / 3)
    assert (teacher.confidence == 1).all()


def test_consensus_finds_the_lowest_inertia_partition_that_ten_starts_can_miss():
    # Six runs of 1,000 rows, each merging three pairs of clusters, splitting three others at
    # random and relabelling 20% of rows at random: their one-hot rows have local optima, and
    # k-means with 10 starts (seed 0, as the consensus of a seed-0 fit used) stops in one.
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    truth = np.repeat(np.arange(10), 100)
    runs = []
    for _ in range(6):
        p = truth.copy()
        for _ in range(3):
            a, b = rng.choice(10, 2, replace=False)
            p[p == b] = a
            c = rng.choice([j for j in range(10) if j not in (a, b)])
            rows = np.flatnonzero(p == c)
            p[rows[rng.random(len(rows)) < 0.5]] = b
        noise = rng.random(len(p)) < 0.2
        p[noise] = rng.integers(0, 10, noise.sum())
        runs.append(p)
    onehots = np.concatenate([np.eye(10)[p] for p in runs], axis=1)

    def inertia(labels):
        return sum(((onehots[labels == j] - onehots[labels == j].mean(axis=0)) ** 2).sum() for j in np.unique(labels))

    ten_starts = [inertia(KMeans(10, n_init=10, random_state=s).fit_predict(onehots)) for s in range(10)]
    assert ten_starts[0] > min(ten_starts) + 1      # the case this test is about
    assert inertia(consensus(runs, 10, seed=0).labels) <= min(ten_starts) + 1e-6


@pytest.fixture
def teacher_runs(monkeypatch):
    """The (embedding, seed) of each teacher run from here on; the runs still run."""
    import deepclust.trainer.selflabel as selflabel

    calls, plain = [], selflabel._n2d

    def recording(z, k, config, *, seed):
        calls.append((z, seed))
        return plain(z, k, config, seed=seed)

    monkeypatch.setattr(selflabel, "_n2d", recording)
    return calls


def test_several_runs_use_other_seeds_and_one_run_is_plain_n2d(teacher_runs):
    z, y = rings()
    one = teach(z, 2, SelfLabelConfig(), seed=5)
    assert [s for _, s in teacher_runs] == [5] and one.agreement is None
    np.testing.assert_array_equal(one.labels, plain_n2d(z, 2, SelfLabelConfig(), seed=5).labels)
    teacher_runs.clear()
    three = teach(z, 2, SelfLabelConfig(runs=3), seed=5)
    seeds = [s for _, s in teacher_runs]
    assert seeds[0] == 5 and len(set(seeds)) == 3
    assert cluster_accuracy(y, three.labels) > 0.99 and three.agreement.shape == (len(z),)
    teacher_runs.clear()
    teach(z, 2, SelfLabelConfig(runs=3), seed=6)
    # neighbouring fit seeds share no run
    assert teacher_runs[0][1] == 6 and not {s for _, s in teacher_runs} & set(seeds)


def test_the_teacher_keeps_the_most_likely_of_its_gmm_fits():
    """Ten blobs in pairs and quads: one GMM fit, started from one k-means++ draw, sometimes
    covers two blobs with one component and splits another; the best of ten does not."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [3, 0], [0, 3], [3, 3], [10, 0], [13, 0], [10, 3], [13, 3], [6, 10], [6, 13]])
    y = np.repeat(np.arange(10), 100)
    u = centres[y] + rng.normal(scale=0.5, size=(len(y), 2))
    one = [cluster_accuracy(y, mixture(u, 10, inits=1, seed=s).labels) for s in range(40)]
    ten = [cluster_accuracy(y, mixture(u, 10, inits=10, seed=s).labels) for s in range(40)]
    assert min(one) < 0.95      # the trap is there for one fit
    assert min(ten) > 0.99      # and the most likely of ten avoids it for every seed


def test_each_teacher_run_uses_the_configured_gmm_inits(monkeypatch):
    import deepclust.trainer.selflabel as selflabel

    z, _ = rings()
    calls = []
    plain = selflabel.mixture

    def recording(u, k, *, inits, seed):
        calls.append(inits)
        return plain(u, k, inits=inits, seed=seed)

    monkeypatch.setattr(selflabel, "mixture", recording)
    teach(z, 2, SelfLabelConfig(runs=2, gmm_inits=3), seed=0)
    assert calls == [3, 3]


def test_a_teacher_of_several_embeddings_runs_on_each_and_teaches_the_consensus_of_all(teacher_runs):
    z, y = rings()
    mirrored = -z          # another network's embedding of the same rows
    calls, plain = teacher_runs, plain_n2d
    both = teach([z, mirrored], 2, SelfLabelConfig(runs=2), seed=5)
    assert [e is z for e, _ in calls] == [True, True, False, False]        # runs on each embedding
    assert [s for _, s in calls] == [run_seed(5, i) for i in range(4)]     # every run its own seed
    assert both.agreement.shape == (len(z),)
    runs = [plain(e, 2, SelfLabelConfig(), seed=s).labels for e, s in calls]
    np.testing.assert_array_equal(both.labels, consensus(runs, 2, seed=5).labels)
    # one embedding in a list is the same teacher as the embedding alone
    np.testing.assert_array_equal(teach([z], 2, SelfLabelConfig(), seed=5).labels,
                                  teach(z, 2, SelfLabelConfig(), seed=5).labels)


def test_teacher_runs_in_several_processes_equal_the_runs_in_one():
    """Runs shared out over processes (``jobs``) give each run's teacher, bit for bit and in
    order: the consensus a fit teaches does not depend on how many cores it had."""
    from deepclust.trainer.selflabel import _run_all

    z, _ = rings()
    jobs = [(z, 5), (-z, 6), (z[:, ::-1].copy(), 7)]
    one = list(_run_all(jobs, 2, SelfLabelConfig(jobs=1)))
    shared = list(_run_all(jobs, 2, SelfLabelConfig(jobs=3)))
    assert len(shared) == 3
    for a, b in zip(one, shared):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.confidence, b.confidence)
    # the runs differ, so a mix-up of their order would show
    assert not np.array_equal(one[0].confidence, one[1].confidence)
    np.testing.assert_array_equal(teach([z, -z], 2, SelfLabelConfig(runs=2, jobs=4), seed=5).labels,
                                  teach([z, -z], 2, SelfLabelConfig(runs=2), seed=5).labels)


def test_a_teacher_run_pins_one_thread_and_gives_the_process_its_threads_back(monkeypatch):
    """A seeded UMAP's output still moves with the thread count (Fashion-MNIST: by up to 10
    between one numba + BLAS thread and two), so each run uses one of each, in whatever
    process it runs, and the caller's thread count is left as it was."""
    import numba
    import umap
    from threadpoolctl import threadpool_info

    import deepclust.trainer.selflabel as selflabel

    seen = []
    fit = umap.UMAP.fit_transform

    def recording(self, X, *args, **kwargs):
        seen.append((numba.get_num_threads(), {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(umap.UMAP, "fit_transform", recording)
    before = numba.get_num_threads()
    z, _ = rings()
    selflabel._n2d(z, 2, SelfLabelConfig(), seed=0)
    assert seen == [(1, {1})]
    assert numba.get_num_threads() == before


def test_a_student_with_ema_ships_the_moving_average_of_its_weights_and_centroids(monkeypatch):
    from deepclust.trainer import selflabel

    x, y = blobs()
    teacher = Teacher(y, np.ones(len(y)))
    trajectory = []  # centroids and encoder weights after each step of the unaveraged fit

    def recording_adam(params, lr):
        params = list(params)
        opt = torch.optim.Adam(params, lr=lr)
        opt.register_step_post_hook(lambda *_: trajectory.append([p.detach().clone() for p in params]))
        return opt

    monkeypatch.setattr(selflabel, "make_adam", recording_adam)
    _, last_labels, _ = student(x, teacher, epochs=3)
    steps = len(trajectory) // 3
    half_life = 0.5  # epochs: the weights of each step weigh half as much after half an epoch
    monkeypatch.setattr(selflabel, "make_adam", lambda params, lr: torch.optim.Adam(list(params), lr=lr))
    torch.manual_seed(0)
    encoder = DenseAutoencoder(x.shape[1], (32,), 3).encoder
    config = SelfLabelConfig(epochs=3, batch_size=32, lr=3e-3, ema_half_life=half_life)
    centroids, labels, info = fine_tune(encoder, torch.from_numpy(x), teacher, config,
                                        generator=torch.Generator().manual_seed(0))

    decay = 0.5 ** (1 / (half_life * steps))
    average = trajectory[0]
    for weights in trajectory[1:]:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights)]
    torch.testing.assert_close(torch.from_numpy(centroids), average[0])
    for shipped, expected in zip(encoder.parameters(), average[1:], strict=True):
        torch.testing.assert_close(shipped.detach(), expected)
    assert not torch.allclose(average[0], trajectory[-1][0])  # the average is not the last weights
    # the labels are the shipped model's (what the bundle will assign); the last weights' are kept beside
    with torch.no_grad():
        z = encoder(torch.from_numpy(x))
    np.testing.assert_array_equal(labels, torch.cdist(z, torch.from_numpy(centroids)).argmin(dim=1).numpy())
    np.testing.assert_array_equal(info["unaveraged_labels"], last_labels)
    assert info["teacher_agreement"] == pytest.approx((labels == y).mean())
