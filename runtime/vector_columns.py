"""Vector columns: a table column of equal-length lists of numbers, read as one feature per element.

Embeddings are usually stored this way (a Parquet ``list<float>`` or ``fixed_size_list<float>[d]``
column, as pyarrow, Spark, Hugging Face datasets and LanceDB write them). Element ``i`` of the
column ``emb`` is the feature ``emb[i]``: a bundle's feature names stay one per value, and
scoring reads them by name like any other column. A column literally named ``emb[0]`` is read
as itself.
"""

from __future__ import annotations

import re
from typing import Container

import numpy as np

from .errors import InputError

_ELEMENT = re.compile(r"^(.*)\[(\d+)\]$")


def is_vector_type(t) -> bool:
    """A list type of numbers (the only vectors read)."""
    import pyarrow as pa

    return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)))


def element_names(column: str, width: int) -> list[str]:
    return [f"{column}[{i}]" for i in range(width)]


def source_column(feature: str, names: Container[str]) -> tuple[str, int | None]:
    """The table column ``feature`` is read from, and the element for a vector column's feature.
    ``names``: a set or dict, looked up once or twice per feature of tables of any width."""
    if feature in names:
        return feature, None
    m = _ELEMENT.match(feature)
    if m and m.group(1) in names:
        return m.group(1), int(m.group(2))
    return feature, None


def element_widths(elements) -> dict:
    """Each vector column's width as a model reads it, from ``(column, element)`` pairs
    (:func:`source_column`'s): one more than the highest element read."""
    widths = {}
    for column, element in elements:
        if element is not None:
            widths[column] = max(widths.get(column, 0), element + 1)
    return widths


def first_width(path, column: str, batches) -> int:
    """A variable-length vector column's width, from its first vector in ``batches`` (record
    batches holding the column); the rows' lengths are checked as they are read."""
    import pyarrow.compute as pc

    for batch in batches:
        lengths = pc.list_value_length(batch.column(column)).drop_null()
        if len(lengths):
            return int(lengths[0].as_py())
    raise InputError(f"{path}: column {column!r} holds no vector to take a width from")


def vector_rows(column, name: str, width: int, where: str, start: int) -> np.ndarray:
    """A vector column's rows as a float32 (rows, ``width``) array; a missing vector (or value)
    is NaN, for the NaN check to name; a vector of another length is refused."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.full((len(column), width), np.nan, dtype=np.float32)
    row = 0
    for chunk in column.chunks:
        n = len(chunk)
        valid = np.ones(n, dtype=bool) if chunk.null_count == 0 else chunk.is_valid().to_numpy(zero_copy_only=False)
        dense = chunk if chunk.null_count == 0 else chunk.filter(pa.array(valid))
        lengths = pc.list_value_length(dense).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != width)
        if len(wrong):
            bad = row + int(np.flatnonzero(valid)[wrong[0]])
            raise InputError(f"{where}row {start + bad}, column {name!r}: a vector of {lengths[wrong[0]]} values, "
                             f"where the model reads {width}")
        if len(dense):
            values = pc.list_flatten(dense).to_numpy(zero_copy_only=False)
            out[row:row + n][valid] = values.reshape(-1, width)
        row += n
    return out


def is_missing(cell) -> bool:
    """A data frame's missing cell: None, NaN or pandas' NA (whose truth value raises)."""
    if cell is None or type(cell).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(cell, float) and cell != cell


def stacked_vectors(values, width: int, source: str, name: str, dtype) -> np.ndarray:
    """A data frame's column of arrays as a (rows, ``width``) array; a missing vector is NaN,
    for the NaN check to name; a vector of another length is refused."""
    out = np.full((len(values), width), np.nan, dtype=dtype)
    for i, cell in enumerate(values.tolist()):
        if is_missing(cell):
            continue
        if np.ndim(cell) != 1 or len(cell) != width:
            raise InputError(f"{source}: row {i}, column {name!r}: a vector of {np.size(cell)} values, where the model "
                             f"reads {width}")
        try:
            out[i] = np.asarray(cell, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{source}: row {i}, column {name!r} holds a vector that is not numbers") from None
    return out
