"""deepclust.trainer: train deep clustering models in PyTorch and export runtime bundles.

Needs the ``train`` extra (``pip install 'deepclust[train]'``). The submodules ``datasets``
and ``metrics`` do not import torch.
"""

from importlib import import_module

__all__ = ["DeepClustering", "Dataset", "load_dataset", "clustering_scores", "cluster_accuracy"]

_LOCATIONS = {"DeepClustering": ".estimator", "Dataset": ".datasets", "load_dataset": ".datasets",
              "clustering_scores": ".metrics", "cluster_accuracy": ".metrics"}


def __getattr__(name):
    # Lazy, so that `deepclust evaluate` can use the data sets and metrics without torch.
    if name in _LOCATIONS:
        try:
            return getattr(import_module(_LOCATIONS[name], __name__), name)
        except ImportError as e:
            raise ImportError(f"{e}; the trainer needs: pip install 'deepclust[train]'") from e
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
