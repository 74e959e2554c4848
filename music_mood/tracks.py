"""The track records of a library behind one interface, TrackStore: a list in memory (TrackList, inline in the
metadata JSON) for a personal library, an SQLite table read lazily (TrackTable) for a catalogue (from
TABLE_MIN_TRACKS tracks on). The questions asked of all records at once (a column, the rows with a value or a tag,
a tag's values) are the store's methods: a list answers them by a walk (indexed once), a table by a query. A caller
never asks which store it holds.

Why: the metadata JSON of 1 000 000 tracks is ~900 MB and took 28-42 s and 3 GB of memory to load here, in every
process (benchmarks/bench_catalogue.py). The table opens in ~50 ms and reads only the rows asked for.

The table file is written once, whole, under a new name, and never changed after: like the vectors, it is a data
file that the metadata JSON names and commits (see library.save_database). So a reader opens it read-only and
immutable, and a reader that holds it open keeps reading its version after a later commit replaces the name.

Table contract (PRAGMA user_version is TABLE_VERSION):
- `tracks(row INTEGER PRIMARY KEY, id, file_path NOT NULL, sha256, duration_s, segment_offset, bpm, has_bpm,
  record NOT NULL)`: row i (from 0) is track i and `record` its whole record as JSON (the object the inline list
  would hold). The other columns repeat the record's values that questions about every track ask (NULL where the
  record has none; has_bpm says whether it has the key, since a bpm of null means "no beat"), so those questions
  read a column instead of decoding every record; id, file_path and sha256 are indexed for lookups.
- `tags(kind, tag, key, row, auto)`: one row per mood or genre a track has, its own (auto 0: the record's `mood`
  or `genre`, `tag` stripped, `key` lower-cased as the filters compare it) and automatic (auto 1, from
  `auto_tags`), indexed by (kind, key), so a mood filter is one query.
"""
from __future__ import annotations

import errno
import json
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from music_mood.tags import auto_tag_words

TABLE_MIN_TRACKS = 20_000  # from here on, a library's JSON would take seconds to load and rewrite
TABLE_VERSION = 1
LOOKUP_KEYS = ("id", "file_path", "sha256")  # the keys a table answers rows_with() for by its indexes
COLUMNS = ("id", "file_path", "sha256", "duration_s", "segment_offset", "bpm")  # repeated from the records
TAG_KINDS = ("mood", "genre")
BATCH = 10_000  # rows read at a time when a table is walked


class TrackStore(Sequence):
    """The records of a library, row i being track i's record (a dict), and the questions asked of all of them at
    once. TrackList holds them in memory, TrackTable reads them from a catalogue's table."""

    @abstractmethod
    def column(self, key: str, default=None) -> list:
        """Every track's value of `key`, in row order; `default` where a record has no such key."""

    @abstractmethod
    def rows_with(self, key: str, value) -> list[int]:
        """The rows whose record has `key` (one of LOOKUP_KEYS) equal to `value`, in order."""

    @abstractmethod
    def rows_tagged(self, kind: str, keys: Iterable[str]) -> list[int]:
        """The rows with a tag of `kind` (mood, genre; own or automatic) whose lower-cased form is one of `keys`, in
        order."""

    @abstractmethod
    def tag_values(self, kind: str) -> set[str]:
        """The distinct tags of `kind`, own (stripped) and automatic, as shown."""

    def row_of_file(self, file_path: str) -> int | None:
        """The first row listing `file_path` (relative to the library, as stored), or None."""
        rows = self.rows_with("file_path", str(file_path))
        return rows[0] if rows else None


class TrackList(list, TrackStore):
    """The records of a small library, in memory: a list (it compares, copies and serialises as one) whose
    questions are answered by a walk, each indexed on first use. Thread-safe to ask; change the records before
    asking, not after (the indexes are not rebuilt)."""

    def __init__(self, records: Iterable[dict] = ()):
        super().__init__(records)
        self._lock = threading.Lock()
        self._tag_rows: dict[str, dict[str, list[int]]] = {}
        self._file_rows: dict[str, int] | None = None

    def __reduce__(self):
        return TrackList, (list(self),)  # a copy or a pickle is the records; the indexes are made again

    def column(self, key: str, default=None) -> list:
        return [t.get(key, default) for t in self]

    def rows_with(self, key: str, value) -> list[int]:
        return [row for row, t in enumerate(self) if t.get(key) == value]

    def rows_tagged(self, kind: str, keys: Iterable[str]) -> list[int]:
        with self._lock:
            if kind not in self._tag_rows:
                self._tag_rows[kind] = _tag_index(self, kind)
            index = self._tag_rows[kind]
        return sorted({row for key in keys for row in index.get(key, ())})

    def tag_values(self, kind: str) -> set[str]:
        return {tag for record in self for tag, _, _ in record_tags(record, kind)}

    def row_of_file(self, file_path: str) -> int | None:
        with self._lock:
            if self._file_rows is None:
                self._file_rows = {str(t["file_path"]): row for row, t in reversed(list(enumerate(self)))}
        return self._file_rows.get(str(file_path))


class TableError(RuntimeError):
    """A track table that cannot be read or is not one (the message names the file)."""


class TrackTable(TrackStore):
    """The records of a track table as a read-only sequence of dicts; each access reads its rows from the file.

    Thread-safe (the web app answers requests in threads); a record is decoded anew at each access, so a caller
    may change what it gets without changing the library (commits write a new table).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            # immutable: a committed table never changes, so no locks and no journal look-ups; opened now (the
            # count reads it), so this reader keeps this file even when a commit renames another over its name.
            self._db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version != TABLE_VERSION:
                raise TableError(f"{self.path} is track table version {version}, this program reads {TABLE_VERSION}")
            self._length = self._db.execute("SELECT count(*) FROM tracks").fetchone()[0]
            last = self._db.execute("SELECT max(row) FROM tracks").fetchone()[0]
        except sqlite3.Error as e:
            raise TableError(f"{self.path} is not a readable track table ({e})") from e
        if self._length and last != self._length - 1:
            raise TableError(f"{self.path} numbers its {self._length} rows up to {last}, not from 0 without gaps")

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"track {i} of {self._length}")
        return json.loads(self._query("SELECT record FROM tracks WHERE row = ?", (i,))[0][0])

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, self._length, BATCH):
            for (record,) in self._query("SELECT record FROM tracks WHERE row >= ? AND row < ? ORDER BY row",
                                         (start, start + BATCH)):
                yield json.loads(record)

    def column(self, key: str, default=None) -> list:
        """Every track's value of `key`, in row order; `default` where a record has no such key. The COLUMNS are
        read as they are; another key is taken out of every record (slow for a catalogue: seconds a million)."""
        if key == "bpm":
            return [value if present else default
                    for present, value in self._query("SELECT has_bpm, bpm FROM tracks ORDER BY row")]
        if key in COLUMNS:
            return [default if value is None else value
                    for (value,) in self._query(f"SELECT {key} FROM tracks ORDER BY row")]
        rows = self._query("SELECT json_type(record, ?), json_extract(record, ?) FROM tracks ORDER BY row",
                           (_json_path(key),) * 2)
        return [default if kind is None else json.loads(value) if kind in ("object", "array") else value
                for kind, value in rows]

    def rows_with(self, key: str, value) -> list[int]:
        """The rows whose `key` (one of LOOKUP_KEYS) equals `value`, in order; by index, without a scan."""
        if key not in LOOKUP_KEYS:
            raise ValueError(f"a track table looks rows up by {', '.join(LOOKUP_KEYS)}, not {key!r}")
        return [row for (row,) in self._query(f"SELECT row FROM tracks WHERE {key} = ? ORDER BY row", (value,))]

    def rows_tagged(self, kind: str, keys: Iterable[str]) -> list[int]:
        """By the tags table's index, one query."""
        keys = list(keys)
        if kind not in TAG_KINDS or not keys:
            return []
        return [row for (row,) in self._query(f"SELECT DISTINCT row FROM tags WHERE kind = ? AND key IN "
                                              f"({', '.join('?' * len(keys))}) ORDER BY row", (kind, *keys))]

    def tag_values(self, kind: str) -> set[str]:
        return {tag for (tag,) in self._query("SELECT DISTINCT tag FROM tags WHERE kind = ?", (kind,))}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, parameters=()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as e:
                raise TableError(f"cannot read {self.path} ({e})") from e


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


def write_table(path: Path, tracks) -> None:
    """Write `tracks` (records, in row order) as a new track table at `path`, which must not exist.

    No journal and no syncs while it is written: a crash leaves a torn file that nothing names (the caller
    removes it, and syncs the whole file before a commit names it; see storage.write_new_file_at). A full disk is
    an OSError of errno ENOSPC, as any other file's write gives.
    """
    db = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=rwc", uri=True)
    try:
        if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
            raise FileExistsError(f"{path} already holds tables")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute(f"PRAGMA user_version = {TABLE_VERSION}")
        db.execute("CREATE TABLE tracks (row INTEGER PRIMARY KEY, id TEXT, file_path TEXT NOT NULL, sha256 TEXT, "
                   "duration_s REAL, segment_offset INTEGER, bpm REAL, has_bpm INTEGER NOT NULL, record TEXT NOT NULL)")
        db.execute("CREATE TABLE tags (kind TEXT NOT NULL, tag TEXT NOT NULL, key TEXT NOT NULL, row INTEGER NOT NULL, "
                   "auto INTEGER NOT NULL)")
        rows, tags = [], []
        for row, record in enumerate(tracks):
            rows.append((row, record.get("id"), str(record["file_path"]), record.get("sha256"),
                         record.get("duration_s"), record.get("segment_offset"), record.get("bpm"), "bpm" in record,
                         json.dumps(record, ensure_ascii=False)))
            tags.extend(_tag_rows(row, record))
            if len(rows) >= BATCH:
                _insert(db, rows, tags)
        _insert(db, rows, tags)
        for key in LOOKUP_KEYS:  # after the rows: one sort per index instead of a b-tree insert per row
            db.execute(f"CREATE INDEX tracks_{key} ON tracks({key})")
        db.execute("CREATE INDEX tags_key ON tags(kind, key, row)")
        db.execute("CREATE INDEX tags_tag ON tags(kind, tag)")
        db.commit()
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode == sqlite3.SQLITE_FULL:  # the disk: an OSError like any other file's write
            raise OSError(errno.ENOSPC, f"cannot write {path} ({e})") from e
        raise
    finally:
        db.close()


def _insert(db: sqlite3.Connection, rows: list[tuple], tags: list[tuple]) -> None:
    """Insert a batch of track rows and their tag rows, and empty both lists."""
    db.executemany("INSERT INTO tracks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO tags VALUES (?, ?, ?, ?, ?)", tags)
    rows.clear()
    tags.clear()


def record_tags(record: dict, kind: str) -> list[tuple[str, str, bool]]:
    """A record's tags of `kind` (mood, genre) as (shown, compared, automatic): its own (the record's `mood` or
    `genre`, when not blank; shown stripped, compared lower-cased as the filters compare it), then its automatic
    ones. What the tags table holds, and what a list of records is asked."""
    own = str(record.get(kind, ""))
    tags = [(own.strip(), own.lower(), False)] if own.strip() else []
    return tags + [(tag, tag.lower(), True) for tag in auto_tag_words(record, kind)]


def _tag_rows(row: int, record: dict) -> list[tuple]:
    """The tags table's rows of one record."""
    return [(kind, tag, key, row, int(auto)) for kind in TAG_KINDS for tag, key, auto in record_tags(record, kind)]


def _tag_index(tracks: Iterable[dict], kind: str) -> dict[str, list[int]]:
    """{compared tag: rows having it, own or automatic, in order} of records in memory (a table has its tags table)."""
    rows: dict[str, list[int]] = {}
    for row, record in enumerate(tracks):
        for key in dict.fromkeys(key for _, key, _ in record_tags(record, kind)):
            rows.setdefault(key, []).append(row)
    return rows
