"""Reading one committed data file of a library (the metadata, the vectors, the windows, the track table), checked
against the commit that names it: while a crash leaves that commit half done, its files are read under their staged
names (staged_path), and a file of another commit is refused by its size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from music_mood.database import NORM_TOLERANCE, REBUILD, DatabaseError
from music_mood.tracks import TableError, TrackTable


def staged_path(final: Path, commit_id: str) -> Path:
    """Where a commit's new data file is written before the commit names it; renamed to `final` after."""
    return final.with_name(f".{final.name}.commit-{commit_id}")


def read_metadata(metadata: Path):
    """The metadata file's JSON (a dict, or a seed-format list); DatabaseError when it cannot be read."""
    try:
        return json.loads(metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatabaseError(f"cannot read {metadata} ({e}); {REBUILD}") from e


def load_array(final: Path, commit: dict | None, kind: str, mmap_min_rows: int | None = None) -> np.ndarray:
    """One data file of the committed state: its staged file while that is not yet renamed into place, else
    `final`. Its size must be the one the commit recorded (a commit's files are never mixed with another's).
    A matrix of `mmap_min_rows` rows or more stays memory-mapped."""
    candidates = [final] if not commit else [staged_path(final, commit["id"]), final]
    for path in candidates:
        try:
            size = path.stat().st_size
            # A large library stays memory-mapped: the index answers queries, and only the rows it proposes are read.
            array = np.load(path, mmap_mode="r" if mmap_min_rows else None, allow_pickle=False)
        except FileNotFoundError as e:
            if path != final:
                continue  # renamed into place since we looked: `final` is that file now
            raise DatabaseError(f"{final} is missing while the metadata lists it; {REBUILD}") from e
        except (OSError, ValueError, EOFError) as e:
            raise DatabaseError(f"cannot read {path} ({e}); {REBUILD}") from e
        expected = commit.get(f"{kind}_bytes") if commit else None
        if expected is not None and size != expected:
            raise DatabaseError(f"{final} ({size} bytes) is not the file the metadata's last commit wrote "
                                f"({expected} bytes); {REBUILD}")
        if mmap_min_rows and (array.ndim != 2 or len(array) < mmap_min_rows):
            array = np.array(array)
        return array
    raise AssertionError("unreachable: the last candidate is `final`")


def load_table(final: Path, metadata: Path, meta: dict, commit: dict | None) -> TrackTable:
    """The committed track table `final`, which the `metadata` file (read as `meta`) names: its staged file while
    not yet renamed into place, else `final`; its size must be the one the commit recorded, its row count the
    metadata's."""
    if meta["tracks_table"] != final.name or not commit or "tracks_bytes" not in commit:
        raise DatabaseError(f"{metadata} names the track table {meta['tracks_table']!r}, not {final.name} "
                            f"with its size; {REBUILD}")
    for path in (staged_path(final, commit["id"]), final):
        try:
            size = path.stat().st_size
            table = TrackTable(path)
        except (FileNotFoundError, TableError) as e:
            if path != final and not path.exists():
                continue  # renamed into place since we looked: `final` is that file now
            if isinstance(e, FileNotFoundError):
                raise DatabaseError(f"{final} is missing while the metadata lists it; {REBUILD}") from e
            raise DatabaseError(f"{e}; {REBUILD}") from e
        if size != commit["tracks_bytes"] or len(table) != meta.get("track_count"):
            table.close()
            raise DatabaseError(f"{final} ({size} bytes, {len(table)} tracks) is not the table the metadata's last "
                                f"commit wrote ({commit['tracks_bytes']} bytes, {meta.get('track_count')} tracks); "
                                f"{REBUILD}")
        return table
    raise AssertionError("unreachable: the last candidate is `final`")


def rows_are_unit(vectors: np.ndarray, chunk: int = 65_536) -> bool:
    """Every row finite and of length 1 within NORM_TOLERANCE; in chunks, so no (N, D) temporary is made."""
    for start in range(0, len(vectors), chunk):
        rows = np.asarray(vectors[start:start + chunk], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if not np.all(np.abs(norms - 1) < NORM_TOLERANCE):
            return False
    return True
