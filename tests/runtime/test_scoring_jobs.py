"""Resumable scoring jobs, multi-file and image inputs, and errors in the middle of a file."""

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepclust.runtime import Assigner, InputError, Interrupted, score_file
from deepclust.runtime.scoring import work_dir_for

CHUNK = 128  # small chunks so a few hundred rows make several


@pytest.fixture(scope="module")
def assigner(reference_bundle):
    return Assigner.load(reference_bundle, device="cpu", precision="fp32")


@pytest.fixture
def rows(tmp_path, digits_rows):
    x = np.concatenate([digits_rows] * 3)  # 900 rows: 7 full chunks and a partial one
    np.save(tmp_path / "in.npy", x)
    return tmp_path / "in.npy", x


def _interrupt_after(rows_wanted):
    def hook(done, total):
        if done >= rows_wanted:
            raise KeyboardInterrupt
    return hook


@pytest.mark.parametrize("fmt", [".parquet", ".npy", ".csv"])
def test_interrupted_job_resumes_to_a_byte_identical_output(tmp_path, assigner, rows, fmt):
    src, x = rows
    whole, resumed = tmp_path / f"whole{fmt}", tmp_path / f"resumed{fmt}"
    score_file(assigner, src, whole, soft=True, chunk_rows=CHUNK, batch_rows=100)
    with pytest.raises(Interrupted, match="run the same command again to resume") as e:
        score_file(assigner, src, resumed, soft=True, chunk_rows=CHUNK, batch_rows=100,
                   on_progress=_interrupt_after(450))
    assert not resumed.exists()
    # progress comes per encoder call (one chunk here): Ctrl-C at the report of row 512 keeps 4 chunks
    assert e.value.rows_done == 4 * CHUNK
    report = score_file(assigner, src, resumed, soft=True, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 4 * CHUNK and report.rows == len(x)
    assert resumed.read_bytes() == whole.read_bytes()
    assert not work_dir_for(resumed).exists()


def test_a_killed_process_resumes_to_a_byte_identical_output(tmp_path, assigner, rows, reference_bundle):
    src, x = rows
    whole, killed = tmp_path / "whole.parquet", tmp_path / "killed.parquet"
    score_file(assigner, src, whole, chunk_rows=CHUNK, batch_rows=100)
    # SIGKILL itself after 5 chunks: no handler, no cleanup, like `kill -9` or an OOM kill.
    script = textwrap.dedent(f"""
        import os, signal
        from deepclust.runtime import Assigner, score_file
        a = Assigner.load({str(reference_bundle)!r}, device="cpu", precision="fp32")
        def hook(done, total):
            if done >= 5 * {CHUNK}:
                os.kill(os.getpid(), signal.SIGKILL)
        score_file(a, {str(src)!r}, {str(killed)!r}, chunk_rows={CHUNK}, batch_rows=100, on_progress=hook)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not killed.exists() and len(list(work_dir_for(killed).glob("chunk-*.npz"))) == 5
    report = score_file(assigner, src, killed, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 5 * CHUNK
    assert killed.read_bytes() == whole.read_bytes()


def test_output_bytes_do_not_depend_on_the_read_batch_size(tmp_path, reference_bundle, rows):
    src, x = rows
    # small encoder calls and chunks that do not divide the input, so every cut lands somewhere new
    a = Assigner.load(reference_bundle, device="cpu", precision="fp32", batch_size=100)
    outputs = []
    for batch_rows in (1, 7, 64, 333, 4096):
        out = tmp_path / f"out{batch_rows}.npy"
        score_file(a, src, out, soft=True, embeddings=True, chunk_rows=250, batch_rows=batch_rows)
        outputs.append(out.read_bytes())
    assert all(o == outputs[0] for o in outputs[1:])


def test_a_rerun_with_other_arguments_starts_afresh(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    report = score_file(assigner, src, out, chunk_rows=CHUNK, embeddings=True)  # other arguments
    assert report.resumed_rows == 0
    table = pq.read_table(out)
    np.testing.assert_array_equal(table["label"].to_numpy(), assigner.assign(x).labels)
    assert "embedding" in table.column_names


def test_a_changed_input_is_not_resumed(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=100, on_progress=_interrupt_after(300))
    np.save(src, x[::-1].copy())  # same size, new contents and mtime
    os.utime(src, ns=(1, 1))
    report = score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 0
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(x[::-1]).labels)


def test_no_resume_starts_afresh(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    assert score_file(assigner, src, out, chunk_rows=CHUNK, resume=False).resumed_rows == 0


def test_a_second_process_on_the_same_job_is_refused(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    with open(work_dir_for(out) / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another deepclust assign is writing this output"):
            score_file(assigner, src, out, chunk_rows=CHUNK)
    assert not out.exists()


def test_corrupt_parquet_row_group_mid_file_names_the_chunk(tmp_path, assigner, digits_rows):
    src = tmp_path / "in.parquet"
    table = pa.table({f"f{j}": digits_rows[:, j] for j in range(64)})
    pq.write_table(table, src, row_group_size=50, compression="NONE")
    meta = pq.ParquetFile(src).metadata
    rg = meta.row_group(4)  # rows 200-249: chunk 1 with CHUNK = 128
    cols = [rg.column(j) for j in range(rg.num_columns)]
    start = min(c.data_page_offset for c in cols)
    end = max(c.data_page_offset + c.total_compressed_size for c in cols)
    data = bytearray(src.read_bytes())
    data[start:end] = b"\xff" * (end - start)
    src.write_bytes(bytes(data))
    out = tmp_path / "out.parquet"
    with pytest.raises(InputError) as e:
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=50)
    assert "chunk 1 (rows 128-255)" in str(e.value) and "row group 4" in str(e.value)
    assert not out.exists() and not work_dir_for(out).exists()


def test_npy_truncated_while_the_job_runs_names_the_chunk(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.npy"

    def truncate_after_first_chunk(done, total):
        if done == CHUNK:
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) - 64 * 4 * 500)

    with pytest.raises(InputError) as e:
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=CHUNK, on_progress=truncate_after_first_chunk)
    assert "chunk 3 (rows 384-511)" in str(e.value) and "truncated" in str(e.value)
    assert not out.exists() and not work_dir_for(out).exists()


def test_a_truncated_npy_is_refused_before_any_work(tmp_path, assigner, rows):
    src, x = rows
    with open(src, "r+b") as f:
        f.truncate(os.path.getsize(src) - 10)
    with pytest.raises(InputError, match="truncated: the header says 900 rows"):
        score_file(assigner, src, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists() and not work_dir_for(tmp_path / "out.npy").exists()


def test_a_folder_of_parquet_files_is_one_input_in_name_order(tmp_path, assigner, digits_rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    cols = [f"f{j}" for j in range(64)]
    for i, part in enumerate(np.array_split(digits_rows, 3)):
        pq.write_table(pa.table({c: part[:, j] for j, c in enumerate(cols)}), folder / f"part-{i}.parquet",
                       row_group_size=40)
    (folder / "_SUCCESS").write_text("")  # ignored, as Spark and Ray write them
    out = tmp_path / "out.npy"
    # interrupt and resume across a file boundary too
    with pytest.raises(Interrupted):
        score_file(assigner, folder, out, chunk_rows=64, batch_rows=30, on_progress=_interrupt_after(130))
    report = score_file(assigner, folder, out, chunk_rows=64, batch_rows=30)
    assert report.resumed_rows == 192  # Ctrl-C at the report of row 192, the first past 130
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(digits_rows).labels)


def test_several_input_files_must_agree_on_the_row_size(tmp_path, assigner, digits_rows):
    np.save(tmp_path / "a.npy", digits_rows)
    np.save(tmp_path / "b.npy", digits_rows[:, :32])
    with pytest.raises(InputError, match="b.npy: rows have 32 values"):
        score_file(assigner, [tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out.npy")


def test_an_image_folder_scores_like_its_pixels(tmp_path, assigner, digits_rows):
    from PIL import Image

    images = digits_rows[:20].reshape(20, 8, 8).astype(np.uint8)
    for i, img in enumerate(images):
        (tmp_path / "img" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(tmp_path / "img" / f"c{i % 2}" / f"{i:03d}.png")
    out = tmp_path / "out.npy"
    score_file(assigner, tmp_path / "img", out)
    order = sorted(range(20), key=lambda i: (f"c{i % 2}", i))  # sorted paths: c0/..., then c1/...
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(images[order]).labels)


def test_job_fingerprint_is_plain_json(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    job = json.loads((work_dir_for(out) / "job.json").read_text())
    assert job["chunk_rows"] == CHUNK and job["precision"] == "fp32" and job["inputs"]["files"] == 1
