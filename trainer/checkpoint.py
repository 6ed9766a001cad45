"""A pretrained network (autoencoder or contrastive encoder) saved to a file, so that one
pretraining serves several heads.

Pretraining is most of a fit's cost (50 epochs on MNIST: 6 minutes on 2 CPU cores, 17
with augmentation), and k-means, GMM, DEC, IDEC, DCN and DKM all start from the same
pretrained autoencoder (k-means, GMM and selflabel from the same contrastive encoder). The
file holds what a from-scratch fit holds at the end of pretraining: the weights, the random
generators' states and the pretraining options, plus a fingerprint of the training data.
Resuming from it therefore gives the same model, bit for bit, as one uninterrupted fit with
the same options (on CPU); a file made with other options or other data is refused rather
than silently mixed in.

Format: one ``.npz`` (numpy arrays and a JSON string; read with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepclust.runtime.errors import DeepclustError

FORMAT = "deepclust-pretrained/1"
_STATE = "state/"
# The `deepclust train` option that sets each pretraining option, so that a refusal can say
# what to pass (--method auto turns --augment on for images, a fit with --method kmeans not).
_FLAGS = {"pretraining": "--pretrain", "architecture": "--architecture", "latent_dim": "--latent-dim",
          "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "augment": "--augment",
          "acai": "--acai", "hflip": "--hflip", "views": "--views"}


@dataclass
class Pretrained:
    """What pretraining leaves behind: weights, generator states, options and history."""

    options: dict                 # the estimator's pretraining options (see DeepClustering._pretraining_options)
    data_sha256: str              # fingerprint of the (preprocessed, float32) training rows
    state: dict[str, torch.Tensor]
    generator_state: torch.Tensor  # the fit's torch.Generator after pretraining
    torch_rng_state: torch.Tensor  # torch's global CPU generator after pretraining
    device: str
    history: list[dict]
    seconds: float

    def check_compatible(self, options: dict, data_sha256: str, path) -> None:
        """Refuse a file made with other pretraining options or other data (one line naming the first difference)."""
        for name in sorted(set(options) | set(self.options)):
            if options.get(name) != self.options.get(name):
                flag = _flag(name, self.options.get(name), options)
                raise DeepclustError(f"{path}: pretrained with {name}={self.options.get(name)!r}, but this fit has "
                                     f"{name}={options.get(name)!r}; " + (f"pass {flag} to start from it, " if flag
                                                                          else "use the same pretraining options ")
                                     + "or pretrain anew")
        if data_sha256 != self.data_sha256:
            raise DeepclustError(f"{path}: pretrained on different data (fingerprint {self.data_sha256[:12]}, this "
                                 f"data {data_sha256[:12]}); pretrain on this data")


def _flag(name: str, value, options: dict) -> str | None:
    """The `deepclust train` option that sets pretraining option ``name`` to ``value``, if one does."""
    if name == "widths":
        flag = "--filters" if options.get("architecture") == "conv" else "--hidden"
        return f"{flag} {','.join(map(str, value))}" if isinstance(value, list) else None
    if name not in _FLAGS or value is None:
        return None
    if isinstance(value, bool):
        return _FLAGS[name] if value else _FLAGS[name].replace("--", "--no-", 1)
    return f"{_FLAGS[name]} {value}"


def check_writable(path) -> None:
    """Refuse, before pretraining rather than after it, a path ``save_pretrained`` cannot write."""
    path = Path(path)
    if path.is_dir():
        raise DeepclustError(f"{path}: is a folder; a pretrained network is saved to a file (e.g. ae.npz)")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise DeepclustError(f"{path}: cannot be written: {parent} is a file, not a folder")


def fingerprint(features: np.ndarray) -> str:
    """sha256 of the rows as the network sees them (shape and float32 bytes)."""
    h = hashlib.sha256(json.dumps(list(features.shape)).encode())
    h.update(np.ascontiguousarray(features, dtype=np.float32).data)
    return h.hexdigest()


def save_pretrained(path, pretrained: Pretrained) -> Path:
    """Write ``pretrained`` to ``path`` atomically (a partial file never has the final name)."""
    path = Path(path)
    meta = {"format": FORMAT, "options": pretrained.options, "data_sha256": pretrained.data_sha256,
            "device": pretrained.device, "history": pretrained.history, "seconds": pretrained.seconds}
    arrays = {_STATE + name: t.detach().cpu().numpy() for name, t in pretrained.state.items()}
    arrays["generator_state"] = pretrained.generator_state.cpu().numpy()
    arrays["torch_rng_state"] = pretrained.torch_rng_state.cpu().numpy()
    arrays["meta"] = np.array(json.dumps(meta))
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(partial, "wb") as f:
                np.savez(f, **arrays)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)  # a failed write (full disk, a folder at path) leaves nothing
    except OSError as e:
        raise DeepclustError(f"{path}: cannot write the pretrained network ({e.strerror or e})") from None
    return path


def load_pretrained(path) -> Pretrained:
    """Read a file written by ``save_pretrained``; anything else is a one-line DeepclustError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != FORMAT:
                raise DeepclustError(f"{path}: not a deepclust pretrained network file (format "
                                     f"{meta.get('format')!r}, expected {FORMAT!r})")
            state = {k[len(_STATE):]: torch.from_numpy(npz[k].copy()) for k in npz.files if k.startswith(_STATE)}
            generator_state = torch.from_numpy(npz["generator_state"].copy())
            torch_rng_state = torch.from_numpy(npz["torch_rng_state"].copy())
    except FileNotFoundError:
        raise DeepclustError(f"{path}: no such pretrained network file") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DeepclustError(f"{path}: not a readable deepclust pretrained network file ({e})") from None
    options = meta["options"]
    if options.get("pretraining") == "contrastive":
        options.setdefault("views", "strong")  # files written before contrastive views could be chosen
    return Pretrained(options=options, data_sha256=meta["data_sha256"], state=state,
                      generator_state=generator_state, torch_rng_state=torch_rng_state, device=meta["device"],
                      history=meta["history"], seconds=float(meta["seconds"]))
