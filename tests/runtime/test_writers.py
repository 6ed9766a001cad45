"""Result writers: every format round-trips; an aborted job leaves nothing behind."""

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from deepclust.runtime.errors import InputError
from deepclust.runtime.writers import ResultWriter

K, D = 3, 2


def _results(n, seed):
    rng = np.random.default_rng(seed)
    soft = rng.random((n, K)).astype(np.float32)
    return (rng.integers(0, K, n), rng.random(n).astype(np.float32), soft, rng.random((n, D)).astype(np.float32))


def _write(path, batches, **kw):
    with ResultWriter(path, k=K, latent_dim=D, soft=True, embeddings=True, **kw) as w:
        for b in batches:
            w.write(*b)
    return w


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".csv"])
def test_round_trip(tmp_path, suffix):
    batches = [_results(5, 0), _results(3, 1)]
    out = tmp_path / f"r{suffix}"
    _write(out, batches)
    labels = np.concatenate([b[0] for b in batches])
    soft = np.concatenate([b[2] for b in batches])
    emb = np.concatenate([b[3] for b in batches])
    if suffix == ".npy":
        r = np.load(out, allow_pickle=False)
        got_labels, got_soft, got_emb = r["label"], r["soft"], r["embedding"]
    elif suffix == ".parquet":
        t = pq.read_table(out)
        got_labels = t["label"].to_numpy()
        got_soft = np.stack(t["soft"].to_numpy(zero_copy_only=False))
        got_emb = np.stack(t["embedding"].to_numpy(zero_copy_only=False))
    else:
        t = pcsv.read_csv(out)
        got_labels = t["label"].to_numpy()
        got_soft = np.stack([t[f"soft_{j}"].to_numpy() for j in range(K)], 1)
        got_emb = np.stack([t[f"z_{j}"].to_numpy() for j in range(D)], 1)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_soft, soft, rtol=1e-6)
    np.testing.assert_allclose(got_emb, emb, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".csv"])
def test_error_midway_leaves_no_output(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    with pytest.raises(RuntimeError):
        with ResultWriter(out, k=K, latent_dim=D) as w:
            w.write(*_results(5, 0)[:2])
            raise RuntimeError("reader failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_and_kept(tmp_path):
    out = tmp_path / "r.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        ResultWriter(out, k=K, latent_dim=D)
    assert out.read_bytes() == b"precious"


def test_unknown_output_format(tmp_path):
    with pytest.raises(InputError, match="unknown output format .txt"):
        ResultWriter(tmp_path / "r.txt", k=K, latent_dim=D)
