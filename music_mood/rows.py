"""A catalogue's row matrices (vectors, windows) changed without holding them: the next state of a matrix as a
lazy stack of row blocks (slices of the memory-mapped file committed last, and the new rows), written to its new
.npy file block by block.

Why: the windows of a million 3-minute tracks are ~37 GB of float32 (benchmarks/bench_catalogue.py), more than
this machine's memory; a commit that adds a hundred tracks must not stack them all in memory to write them again.
A small library keeps plain arrays (build.compose_database decides, by whether the library was memory-mapped).
"""
from __future__ import annotations

import numpy as np

WRITE_ROWS = 65_536  # rows copied at a time while a stack is written (32 MB of 512-d float32)


class RowStack:
    """Rows of several 2-D float32 blocks, one under the other, without copying them: shape, len, rows by index
    (a copy of just those rows), np.asarray (all of them, for a caller that needs the whole matrix) and
    write_npy (the bytes np.save would write, block by block)."""

    def __init__(self, blocks, dim: int):
        self.blocks = [b for b in blocks if len(b)]
        self.dim = dim
        self._starts = np.cumsum([0] + [len(b) for b in self.blocks])
        for block in self.blocks:
            if block.ndim != 2 or block.shape[1] != dim:
                raise ValueError(f"a block of shape {block.shape} does not stack with {dim}-d rows")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._starts[-1]), self.dim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, rows) -> np.ndarray:
        """Rows as a new float32 array: an int, a slice, or a sequence of row numbers."""
        if isinstance(rows, (int, np.integer)):
            return self[[int(rows)]][0]
        if isinstance(rows, slice):
            rows = range(*rows.indices(len(self)))
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of 0..{len(self) - 1}")
        out = np.empty((len(rows), self.dim), np.float32)
        block_of = np.searchsorted(self._starts, rows, side="right") - 1
        for b in np.unique(block_of):
            at = block_of == b
            out[at] = self.blocks[b][rows[at] - self._starts[b]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.vstack([np.zeros((0, self.dim), np.float32), *self.blocks]).astype(np.float32, copy=False)
        return whole if dtype is None else whole.astype(dtype)

    def write_npy(self, f) -> None:
        """Write the stack as np.save writes a C-order float32 (N, D) array: the same bytes."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(f, header)
        for block in self.blocks:
            for start in range(0, len(block), WRITE_ROWS):
                f.write(np.ascontiguousarray(block[start:start + WRITE_ROWS], dtype=np.float32).tobytes())


def take_rows(matrix, rows) -> RowStack:
    """`matrix[rows]` (a 2-D array, memory-mapped or not, or a RowStack) as a RowStack of slices, without reading
    a row: consecutive rows make one slice, so keeping every row of a file is one slice of it."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return take_ranges(matrix, [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks) if len(run)])


def take_ranges(matrix, ranges) -> RowStack:
    """The rows of `matrix` in each [start, stop) of `ranges`, in order, as a RowStack of slices; ranges that
    follow each other make one slice."""
    merged: list[list[int]] = []
    for start, stop in ranges:
        if stop <= start:
            continue
        if merged and merged[-1][1] == start:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    blocks = []
    for start, stop in merged:
        blocks.extend(_slices(matrix, start, stop))
    return RowStack(blocks, int(matrix.shape[1]))


def _slices(matrix, start: int, stop: int) -> list:
    """Rows [start, stop) of `matrix` as views: one for an array, one per block crossed for a RowStack."""
    if not isinstance(matrix, RowStack):
        return [matrix[start:stop]]
    out = []
    for b, block in enumerate(matrix.blocks):
        low, high = max(start, matrix._starts[b]), min(stop, matrix._starts[b + 1])
        if low < high:
            out.append(block[low - matrix._starts[b]:high - matrix._starts[b]])
    return out


def stack_rows(blocks, dim: int) -> RowStack:
    """Blocks (arrays or RowStacks) one under the other, as one RowStack of their blocks."""
    flat = []
    for block in blocks:
        flat.extend(block.blocks if isinstance(block, RowStack) else [np.asarray(block, np.float32).reshape(-1, dim)])
    return RowStack(flat, dim)


def is_lazy(matrix) -> bool:
    """Whether `matrix` is a catalogue's (memory-mapped, or a RowStack): its next state is then stacked lazily."""
    return isinstance(matrix, (RowStack, np.memmap))


def save_rows(f, matrix) -> None:
    """Write `matrix` (N, D) to `f` as np.save would, block by block: a RowStack or a memory-mapped file is streamed,
    and every write goes through f.write, so a full disk is an OSError with its errno (np.save's tofile says only
    "N requested and M written")."""
    if not isinstance(matrix, RowStack):
        matrix = np.asarray(matrix) if not isinstance(matrix, np.memmap) else matrix
        matrix = RowStack([matrix], int(matrix.shape[1]))
    matrix.write_npy(f)
