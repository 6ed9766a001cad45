"""Self-labelling: N2D's clusters as a teacher, distilled into an exportable encoder + centroids.

N2D (McConville et al., 2019) clusters a pretrained autoencoder's embedding far better than
k-means does: UMAP re-embeds it from its k-nearest-neighbour graph, so the data's manifold
rather than Euclidean distance decides, and a Gaussian mixture clusters UMAP's output (MNIST
ACC 0.979). But UMAP is not an encoder the runtime can run. Here its partition is the
teacher: the rows it is confident about (GMM posterior >= ``confidence``) train the encoder
and the centroids so that the nearest centroid gives the teacher's label, with DEC's
Student-t soft assignment as the classifier (loss -log q[i, label_i]; bounded, so the
embedding cannot win by growing). With ``augment`` the student sees warped images and
learns labels that do not move under small warps, which is where it can beat its teacher.
The student need not be the encoder that taught: on images a fresh convolutional encoder,
trained from scratch on the labels, generalises past the teacher further than the dense
encoder does (MNIST seed 1: teacher 0.978, dense student 0.980, conv student 0.986).
Where the student ends under its teacher instead (Fashion-MNIST's contrastive teachers), a
small head on the frozen features the teacher read reproduces it more faithfully
(``FeatureHead``).

The export is the usual one: encoder + centroids, labels = nearest centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deepclust.runtime.errors import DeepclustError

from .dec import soft_assignment
from .finetune import batch_indices, embed, nearest
from .pretrain import make_adam
from .seeds import run_seed


# Passes over the kept rows, per student: a pretrained encoder only adjusts; a fresh conv
# encoder learns from scratch (MNIST seed 1: 10 epochs 0.9839, 20 0.9857, 30 0.9846).
# A head on frozen features trains in seconds a pass, so it gets the conv student's 20.
STUDENT_EPOCHS = {"encoder": 10, "conv": 20, "head": 20}

# The head's hidden width, not tuned: on three 128-d contrastive networks' features it agrees
# with Fashion-MNIST's teachers on 96% of rows and ends above them (``FeatureHead``).
HEAD_HIDDEN = 256

# k-means starts of the consensus of teacher runs. Its one-hot rows have local optima that 10
# starts miss: on the six runs of Fashion-MNIST seed 1 (three contrastive networks), 4 of 6
# k-means seeds with 10 starts each stopped at a partition of higher inertia (61,296 against
# 60,302) and ACC 0.6526 against 0.6767; on seed 2's, 3 of 6 (0.6701 against 0.6722). With
# 100 starts, three k-means seeds each found the lowest on both (27 s on 70,000 rows, one thread).
CONSENSUS_INITS = 100


@dataclass
class SelfLabelConfig:
    n_neighbors: int = 20       # UMAP's graph (N2D's MNIST setting)
    min_dist: float = 0.0       # UMAP packs clusters tightly: what a clusterer wants
    confidence: float = 0.99    # teacher rows kept: GMM posterior at least this
    runs: int = 1               # UMAP + GMM runs; more than one: their consensus teaches (``consensus``)
    gmm_inits: int = 1          # GMM initialisations per run (N2D's: 1); the most likely fit teaches (``mixture``)
    epochs: int = 10            # passes over the kept rows
    batch_size: int = 256
    lr: float = 1e-3
    jobs: int = 1               # teacher runs at once, each in its own process (``_run_all``)
    ema_half_life: float = 0.0  # epochs; > 0: what ships is a moving average of the student (``fine_tune``)


@dataclass
class Teacher:
    labels: np.ndarray       # (n,) the teacher's partition
    confidence: np.ndarray   # (n,) its posterior for that label (1 for a consensus)
    agreement: np.ndarray | None = None   # (n,) a consensus only: share of runs that agree


def teach(embeddings: np.ndarray | Sequence[np.ndarray], k: int, config: SelfLabelConfig, *, seed: int,
          progress=None) -> Teacher:
    """N2D on an embedding (n, d): UMAP to k dimensions, then a full-covariance GMM.

    ``embeddings`` is one embedding or several of the same rows (one per pretrained network);
    ``config.runs`` runs on each, with other UMAP and GMM seeds. More than one run in all:
    their consensus teaches. Networks pretrained from other seeds err on different rows more
    than UMAP runs on one network do (README results), so their consensus is the better teacher.
    """
    if isinstance(embeddings, np.ndarray):
        embeddings = [embeddings]
    jobs = seeded_runs(embeddings, config.runs, seed)
    task = progress.add_task("teacher (UMAP + GMM)", total=len(jobs), info="") if progress else None
    runs = []
    for teacher in _run_all(jobs, k, config):
        runs.append(teacher)
        if task is not None:
            progress.advance(task)
    if len(runs) == 1:
        return runs[0]
    return consensus([t.labels for t in runs], k, seed=seed)


def min_rows(k: int) -> int:
    """Rows the teacher needs for ``k`` clusters: UMAP's spectral start takes k + 1 eigenvectors
    of the rows' graph, which needs more than k + 1 rows."""
    return k + 2


def seeded_runs(embeddings: Sequence[np.ndarray], runs: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """(embedding, seed) of every teacher run: ``runs`` on each embedding, in order. Run 0
    uses the fit's seed, so that one run is the plain N2D teacher."""
    return [(z, run_seed(seed, i)) for i, z in enumerate(z for z in embeddings for _ in range(runs))]


def _run_all(jobs: list[tuple[np.ndarray, int]], k: int, config: SelfLabelConfig):
    """N2D on each (embedding, seed), in order; in ``config.jobs`` processes where that is
    more than one. UMAP with a seed runs on one thread, so a teacher of several runs waits
    on one core unless the runs share the cores out (each run is seeded: same results)."""
    n_jobs = min(config.jobs, len(jobs))
    if n_jobs <= 1:
        for z, seed in jobs:
            yield _n2d(z, k, config, seed=seed)
        return
    from joblib import Parallel, delayed

    yield from Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_n2d)(z, k, config, seed=seed) for z, seed in jobs)


def consensus(partitions: list[np.ndarray], k: int, *, seed: int) -> Teacher:
    """One partition from several of the same rows: k-means (``CONSENSUS_INITS`` inits) on
    each row's concatenated one-hot labels, so rows that the runs keep together stay together.

    N2D's partition moves with UMAP's seed: on Fashion-MNIST one run merges pullovers, coats
    and shirts into one cluster and splits dresses, another splits the footwear wrongly. The
    runs rarely share a mistake, so the rows' common ground is closer to the classes than the
    average run (one contrastive encoder, four runs of ACC 0.663, 0.568, 0.653, 0.683: their
    consensus 0.687; any three of them 0.668-0.684). Every row is kept for the student (the
    consensus has no posterior): ``confidence`` is 1, and ``agreement`` says what share of
    the runs put the row in its consensus cluster (after matching each run's labels to it).
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    onehots = np.concatenate([np.eye(k, dtype=np.float32)[p] for p in partitions], axis=1)
    labels = KMeans(n_clusters=k, n_init=CONSENSUS_INITS, random_state=seed).fit_predict(onehots).astype(np.int64)
    agreement = np.zeros(len(labels))
    for p in partitions:
        overlap = np.zeros((k, k), dtype=np.int64)
        np.add.at(overlap, (p, labels), 1)
        rows, cols = linear_sum_assignment(-overlap)
        matched = np.empty(k, dtype=np.int64)
        matched[rows] = cols
        agreement += matched[p] == labels
    return Teacher(labels, np.ones(len(labels)), agreement / len(partitions))


def _n2d(z: np.ndarray, k: int, config: SelfLabelConfig, *, seed: int) -> Teacher:
    try:
        import umap
    except ImportError as e:
        raise ImportError("method 'selflabel' needs umap-learn: pip install 'deepclust[train]'") from e

    import numba
    from threadpoolctl import threadpool_limits

    # A fixed random_state makes UMAP deterministic for a thread count, not across them: on
    # Fashion-MNIST one numba + one BLAS thread against two of each moved UMAP's output by up
    # to 10 and changed the teacher (which of the two, not isolated). One numba and one BLAS thread
    # make a run's teacher the same in any process (``_run_all``) and on any number of cores,
    # and cost nothing measured (two runs on 70,000 rows in one process: 216 s pinned, 270 s
    # not; benchmarks/teacher_jobs.py).
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            u = umap.UMAP(n_neighbors=min(config.n_neighbors, len(z) - 1), n_components=k,
                          min_dist=config.min_dist, random_state=seed, n_jobs=1).fit_transform(z)
            return mixture(u, k, inits=config.gmm_inits, seed=seed)
    finally:
        numba.set_num_threads(threads)


def mixture(u: np.ndarray, k: int, *, inits: int, seed: int) -> Teacher:
    """A full-covariance GMM on UMAP's output ``u``, the most likely of ``inits`` fits.

    One fit lands in whichever local optimum its k-means start leads to. On Fashion-MNIST's
    contrastive features that, more than UMAP's seed, made the teacher unsteady: one UMAP
    embedding gave ACC 0.568-0.683 over six GMM seeds and the likeliest of 30 fits 0.682. On
    three UMAP embeddings the likeliest of 30 scored 0.681-0.684, the same for two sets of
    30 seeds, where one set of 10 had missed it (0.646-0.656). On an autoencoder's embedding
    the likeliest mixture was the worse teacher (README results), so the estimator asks for
    30 fits after contrastive pretraining only.
    """
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=k, covariance_type="full", n_init=inits, random_state=seed).fit(u)
    posterior = gmm.predict_proba(u)
    return Teacher(posterior.argmax(axis=1).astype(np.int64), posterior.max(axis=1))


def feature_head(n_features: int, latent_dim: int) -> nn.Module:
    """The trainable part of a ``FeatureHead`` student: one hidden layer to ``latent_dim``."""
    return nn.Sequential(nn.Linear(n_features, HEAD_HIDDEN), nn.ReLU(), nn.Linear(HEAD_HIDDEN, latent_dim))


class FeatureHead(nn.Module):
    """A student that keeps the pretrained networks as they are and learns only a head on
    their features side by side.

    The teacher's partition is read from those features (UMAP + GMM on each network's), so a
    head on them can follow it where a fresh network learns its own boundaries: on the three
    contrastive networks' teachers of Fashion-MNIST seeds 0-2 (0.6885, 0.6767, 0.6722) heads
    scored 0.6921, 0.6788, 0.6736, each above its teacher, where conv students ended 0.001-0.009
    under theirs (benchmarks/FINDINGS.md). The networks are frozen: the head trains on their
    features computed once, and ships with them as one encoder.
    """

    def __init__(self, networks: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        self.networks = nn.ModuleList(networks).requires_grad_(False).eval()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([network(x) for network in self.networks], dim=1))

    def train(self, mode: bool = True) -> "FeatureHead":
        super().train(mode)
        self.networks.eval()  # frozen: batch norm keeps its pretraining statistics
        return self


class _Student(nn.Module):
    """Encoder and centroids as one module, so that one moving average covers both."""

    def __init__(self, encoder: nn.Module, centroids: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.centroids = nn.Parameter(centroids)


def fine_tune(encoder: nn.Module, x: torch.Tensor, teacher: Teacher, config: SelfLabelConfig,
              *, generator: torch.Generator, progress=None,
              augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train ``encoder`` ((n, n_features) -> (n, d)) and centroids to reproduce the teacher's confident labels.

    The encoder may be the one whose embedding taught the teacher or a fresh network (the
    ``student`` option); either way the centroids start at the per-label means of its
    embedding of the kept rows. With ``ema_half_life`` the encoder ends with an exponential
    moving average of its weights and the centroids' over the training steps (weight halving
    every that many epochs): the last weights move by a few tenths of a point of ACC from one
    epoch to the next, their average less (benchmarks/FINDINGS.md). Returns (centroids (k, d)
    float32, labels (n,) of the final model, {"kept", "epochs", "teacher_agreement"}, plus
    "unaveraged_labels" (n,) of the last weights when averaged).
    """
    keep = np.flatnonzero(teacher.confidence >= config.confidence)
    k = int(teacher.labels.max()) + 1
    missing = sorted(set(range(k)) - set(teacher.labels[keep].tolist()))
    if missing:
        raise DeepclustError(f"selflabel: the teacher is confident about no row of cluster(s) {missing}; "
                             f"lower the confidence threshold ({config.confidence}) or use another method")
    kept = torch.as_tensor(keep, device=x.device)
    targets = torch.as_tensor(teacher.labels, device=x.device)
    z = embed(encoder, x)
    model = _Student(encoder, torch.stack([z[kept[targets[kept] == j]].mean(dim=0) for j in range(k)]))
    opt = make_adam(model.parameters(), config.lr)
    steps = max(1, len(keep) // config.batch_size)
    average = None
    if config.ema_half_life > 0:
        decay = 0.5 ** (1 / (config.ema_half_life * steps))
        average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    task = progress.add_task("self-label", total=config.epochs * steps, info="") if progress else None
    batches = batch_indices(len(keep), config.batch_size, generator, x.device)
    encoder.train()
    for epoch in range(config.epochs):
        total = torch.zeros((), device=x.device)
        for _ in range(steps):
            idx = kept[next(batches)]
            xb = x[idx] if augment is None else augment(x[idx])
            q = soft_assignment(encoder(xb), model.centroids)
            loss = -torch.log(q.gather(1, targets[idx, None]).clamp_min(1e-12)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update_parameters(model)
            total += loss.detach()
            if task is not None:
                progress.advance(task)
        if task is not None:
            progress.update(task, info=f"epoch {epoch + 1}/{config.epochs} loss {float(total) / steps:.4f}")
    encoder.eval()
    info = {"kept": len(keep) / len(x), "epochs": config.epochs}
    if average is not None:
        info["unaveraged_labels"] = nearest(embed(encoder, x), model.centroids.detach()).cpu().numpy()
        model.load_state_dict(average.module.state_dict())
        info["ema_half_life"] = config.ema_half_life
    labels = nearest(embed(encoder, x), model.centroids.detach()).cpu().numpy()
    info["teacher_agreement"] = float((labels == teacher.labels).mean())
    return model.centroids.detach().cpu().numpy().astype(np.float32), labels, info
