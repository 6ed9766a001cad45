"""deepclust: deep clustering you can ship (``deepclust.trainer``, ``deepclust.runtime``, ``deepclust.cli``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepclust")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
