"""A batch scoring job: stream a file through an Assigner into an atomic output file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .assigner import Assigner
from .errors import InputError
from .readers import DEFAULT_BATCH_ROWS, open_reader
from .writers import ResultWriter


@dataclass
class ScoringReport:
    rows: int
    seconds: float
    output: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def score_file(assigner: Assigner, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
               soft: bool = False, embeddings: bool = False, overwrite: bool = False,
               batch_rows: int = DEFAULT_BATCH_ROWS,
               on_progress: Callable[[int, int | None], None] | None = None) -> ScoringReport:
    """Score every row of ``input_path`` into ``output_path`` (.parquet, .npy or .csv).

    Memory stays at a few batches whatever the input size. The output is written to a
    temporary file and renamed at the end: on any error nothing is left at ``output_path``.
    ``on_progress(rows_done, total_rows_or_None)`` is called after each batch.
    """
    manifest = assigner.manifest
    reader = open_reader(input_path, feature_names=manifest.input.feature_names)
    if reader.n_values != manifest.input.n_features:
        raise InputError(assigner.shape_error(reader.path, reader.sample_shape))
    t0 = time.perf_counter()
    with ResultWriter(output_path, k=manifest.k, latent_dim=manifest.latent_dim, soft=soft,
                      embeddings=embeddings, overwrite=overwrite) as writer:
        for batch in reader.batches(batch_rows):
            # The reader's buffer is reused for the next batch, so it may be preprocessed in place.
            x = batch.values if batch.values.flags.writeable else batch.values.copy()
            result = assigner._assign_prepared(x, soft, embeddings)
            writer.write(result.labels, result.distances, result.soft, result.embeddings)
            if on_progress is not None:
                on_progress(writer.rows, reader.n_rows)
    return ScoringReport(rows=writer.rows, seconds=time.perf_counter() - t0, output=Path(output_path))
