"""The library side: audio files → whole-track CLAP vectors → the music database, written so no music is lost.

Database contract (checked by load_database):
- music_database.npy: float32 (N, D), every row L2-normalised; row i is track i of the metadata.
- music_database_segments.npy: float32 (S, D), one unit row per 10 s window, track i owning rows
  [segment_offset, segment_offset + segment_count).
- music_database_metadata.json: {"format", "version", "clap_model", "embedding": {method, sample_rate,
  window_s, dim}, "commit": {id, vectors_bytes, segments_bytes, moves}, "tracks": [{id, title, artist, mood,
  genre, file_path, duration_s, sha256, segment_offset, segment_count, last_window_start_s, from_file}]}.
  file_path is relative to the library folder; from_file holds the tags the file itself gave; a track's last
  window starts at last_window_start_s (absent in older databases, whose last window is zero-padded). A
  seed-format file (a bare list of {id, file_path, title, mood, genre}) still loads, without segments.
- One commit point (save_database): the data files of a change are written under new names first; replacing the
  metadata, which names them, commits the change; they are renamed into place after. A reader sees the old
  library or the new one, and a crash after the commit is finished from the metadata (finish_commit).
- music_database_index.faiss (libraries of SEARCH_INDEX_MIN_TRACKS or more): a cache of the approximate search
  index, derived from music_database.npy; it starts with the SHA-256 of the vectors it indexes and is rebuilt
  whenever they differ. Deleting it is always safe.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import itertools
import json
import math
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import HelpFormatter, add_model_arguments
from music_mood.storage import (LibraryBusyError, acquire_lock, copy_file, fsync_dir, move_file, remove, rename,
                                write_atomically, write_new_file)

FORMAT_NAME = "music-mood-database"
FORMAT_VERSION = 1
EMBEDDING_METHOD = ("whole-track: mean of full 10 s windows (the last ends at the track's end) weighted by the new "
                    "audio in each, L2-normalised")
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a")
GENRE_WORDS = ("acoustic", "electronic", "ambient", "classical", "jazz", "rock", "pop", "folk", "piano",
               "orchestral", "hiphop", "lofi", "blues", "country", "metal", "reggae", "soul", "funk")
WINDOWS_PER_BATCH = 8
MIX_FRAMES = 256  # decoded frames whose channels are averaged at once (~5 s of Opus)
HOME_ENV = "MUSIC_MOOD_HOME"
NORM_TOLERANCE = 1e-3
SAMPLE_PACKAGE = "immich-memories-music"
# From this many tracks on, a query is answered by a faiss index instead of a scan of every row: an exact scan of
# 200 000 x 512 float32 rows already reads 400 MB per query. Below it, exact search is fast and stays the default.
SEARCH_INDEX_MIN_TRACKS = 200_000
INDEX_FORMAT = b"music-mood-ivf-sq8-v1"
REBUILD = "rebuild it with: python music_to_vector.py --rebuild"
READ_ATTEMPTS = 5  # reads of a library that a builder keeps committing to, before giving up


class DatabaseError(RuntimeError):
    """The database files are missing pieces, corrupt, or were made by another model; the message says what to do."""


class AudioError(ValueError):
    """An audio file cannot be decoded or holds no audio."""


@dataclass(frozen=True)
class LibraryPaths:
    """Where one music library lives. file_path in the metadata is relative to `root`."""

    root: Path
    vectors: Path
    metadata: Path
    new_music: Path
    processed_music: Path

    @property
    def segments(self) -> Path:
        return self.vectors.with_name(self.vectors.stem + "_segments.npy")

    @property
    def lock(self) -> Path:
        return self.vectors.with_name(self.vectors.stem + ".lock")

    @classmethod
    def at(cls, root=None, vectors=None, metadata=None) -> "LibraryPaths":
        """The library in `root` (default: $MUSIC_MOOD_HOME, else this project's folder); files may be overridden."""
        root = Path(root or os.environ.get(HOME_ENV) or Path(__file__).resolve().parent).resolve()
        return cls(
            root=root,
            vectors=Path(vectors).resolve() if vectors else root / "music_database.npy",
            metadata=Path(metadata).resolve() if metadata else root / "music_database_metadata.json",
            new_music=root / "new_music",
            processed_music=root / "processed_music",
        )


@dataclass
class Database:
    """The loaded library: vectors float32 (N, D), tracks (N records), segments float32 (S, D) or None."""

    vectors: np.ndarray
    tracks: list[dict]
    segments: np.ndarray | None = None
    clap_model: str | None = None
    root: Path = field(default_factory=Path)
    window_s: float = 10.0  # length of one segment: segment j starts at j * window_s, but a track's last one
    # starts at its record's last_window_start_s (see recommend.best_segment_start)
    vectors_path: Path | None = None  # where `vectors` was loaded from; the search index is cached next to it
    _index: object = field(default=None, repr=False, compare=False)
    _tag_codes: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: object = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.tracks)

    def search_index(self):
        """The faiss index over `vectors` when the library has SEARCH_INDEX_MIN_TRACKS or more, else None.

        Loaded from its cache file (or built, then cached) on first use, once per Database.
        """
        if len(self) < SEARCH_INDEX_MIN_TRACKS:
            return None
        with self._lock:
            if self._index is None:
                self._index = load_search_index(self.vectors, self.vectors_path)
        return self._index

    def tag_codes(self, key: str) -> tuple[dict[str, int], np.ndarray]:
        """A tag (mood, genre...) of every track, lower-cased, as ({value: code}, int32 (N,) codes); cached."""
        with self._lock:
            if key not in self._tag_codes:
                values = [str(t.get(key, "")).lower() for t in self.tracks]
                labels, codes = np.unique(np.array(values, dtype=object), return_inverse=True)
                self._tag_codes[key] = ({v: i for i, v in enumerate(labels)}, codes.astype(np.int32))
            return self._tag_codes[key]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def track_path(self, i: int) -> Path:
        return (self.root / self.tracks[i]["file_path"]).resolve()


def empty_database(root: Path, clap_model: str | None = None, dim: int = 0) -> Database:
    return Database(vectors=np.zeros((0, dim), np.float32), tracks=[], segments=np.zeros((0, dim), np.float32),
                    clap_model=clap_model, root=root)


# ---------------------------------------------------------------------------------------------- load / save


def load_database(paths: LibraryPaths, clap_model: str | None = None, dim: int | None = None) -> Database:
    """Load and check the last committed database. No files at all is an empty library; anything inconsistent is
    a DatabaseError.

    A commit that a crash left half done (its data files not yet renamed into place, its moves not yet made) is
    read as committed, and finished here when the library lock is free. A commit made while the files are being
    read is noticed (the metadata changed) and the read starts again, so the result is one committed state.
    With `clap_model`/`dim`, a database made by another CLAP checkpoint or of another dimension is refused.
    """
    for _ in range(READ_ATTEMPTS):
        before = committed_state(paths)
        db = _load_committed(paths, clap_model, dim)
        if committed_state(paths) == before:
            return db
    raise DatabaseError(f"{paths.metadata} kept changing while it was read (a builder is committing); try again")


def committed_state(paths: LibraryPaths) -> tuple | None:
    """A cheap identity of the committed library (the metadata file's inode, mtime and size): every commit
    replaces that file, so this changes exactly when the library does. None when there is no database."""
    try:
        st = os.stat(paths.metadata)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _load_committed(paths: LibraryPaths, clap_model: str | None, dim: int | None) -> Database:
    if not paths.vectors.exists() and not paths.metadata.exists():
        return empty_database(paths.root, clap_model, dim or 0)
    if not paths.metadata.exists():
        raise DatabaseError(f"{paths.metadata} is missing while {paths.vectors} exists; {REBUILD}")
    meta = _read_metadata(paths)
    commit = meta.get("commit") if isinstance(meta, dict) else None
    if commit and _unfinished(paths, commit):
        _finish_if_free(paths, commit)
    vectors = _load_array(paths.vectors, commit, "vectors", mmap=True)

    if isinstance(meta, list):  # the seed's format: no checkpoint recorded, no segments
        tracks, made_by, segments = meta, None, None
    elif isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and isinstance(meta.get("tracks"), list):
        if meta.get("version") != FORMAT_VERSION:
            raise DatabaseError(f"{paths.metadata} has format version {meta.get('version')}, this program reads "
                                f"{FORMAT_VERSION}; {REBUILD}")
        tracks, made_by = meta["tracks"], meta.get("clap_model")
        segments = _load_array(paths.segments, commit, "segments")
        expected = sum(int(t.get("segment_count", 0)) for t in tracks)
        if segments.ndim != 2 or segments.dtype != np.float32 or len(segments) != expected:
            raise DatabaseError(f"{paths.segments} does not match the metadata ({segments.shape} for {expected} "
                                f"segments); {REBUILD}")
    else:
        raise DatabaseError(f"{paths.metadata} is not a music database metadata file; {REBUILD}")

    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise DatabaseError(f"{paths.vectors} holds {vectors.dtype} {vectors.shape}, not a float32 (N, D) matrix; "
                            f"{REBUILD}")
    if len(vectors) != len(tracks):
        raise DatabaseError(f"{paths.vectors} has {len(vectors)} rows but {paths.metadata} lists {len(tracks)} "
                            f"tracks; {REBUILD}")
    if not all(isinstance(t, dict) and "file_path" in t for t in tracks):
        raise DatabaseError(f"{paths.metadata} has a track without a file_path; {REBUILD}")
    if not _rows_are_unit(vectors):
        raise DatabaseError(f"{paths.vectors} has rows that are not unit-length (or not finite); {REBUILD}")
    if dim is not None and len(vectors) and vectors.shape[1] != dim:
        raise DatabaseError(f"the database holds {vectors.shape[1]}-d vectors but the CLAP model gives {dim}-d; "
                            f"{REBUILD}")
    check_clap_model(made_by, clap_model)
    window_s = float(meta.get("embedding", {}).get("window_s", 10.0)) if isinstance(meta, dict) else 10.0
    return Database(vectors=vectors, tracks=tracks, segments=segments, clap_model=made_by, root=paths.root,
                    window_s=window_s, vectors_path=paths.vectors)


def _read_metadata(paths: LibraryPaths):
    try:
        return json.loads(paths.metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatabaseError(f"cannot read {paths.metadata} ({e}); {REBUILD}") from e


def staged_path(final: Path, commit_id: str) -> Path:
    """Where a commit's new data file is written before the commit names it; renamed to `final` after."""
    return final.with_name(f".{final.name}.commit-{commit_id}")


def _load_array(final: Path, commit: dict | None, kind: str, mmap: bool = False) -> np.ndarray:
    """One data file of the committed state: its staged file while that is not yet renamed into place, else
    `final`. Its size must be the one the commit recorded (a commit's files are never mixed with another's)."""
    candidates = [final] if not commit else [staged_path(final, commit["id"]), final]
    for path in candidates:
        try:
            size = path.stat().st_size
            # A large library stays memory-mapped: the index answers queries, and only the rows it proposes are read.
            array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
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
        if mmap and (array.ndim != 2 or len(array) < SEARCH_INDEX_MIN_TRACKS):
            array = np.array(array)
        return array
    raise AssertionError("unreachable: the last candidate is `final`")


def _committed_id(paths: LibraryPaths) -> str | None:
    try:
        meta = json.loads(paths.metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (meta.get("commit") or {}).get("id") if isinstance(meta, dict) else None


def _unfinished(paths: LibraryPaths, commit: dict) -> bool:
    """Whether a crash stopped `commit` after its commit point: a staged file or a recorded move still waits."""
    return (any(staged_path(final, commit["id"]).exists() for final in (paths.vectors, paths.segments))
            or any(os.path.lexists(paths.root / source) for source, _ in commit.get("moves", [])))


def _finish_if_free(paths: LibraryPaths, commit: dict) -> None:
    """Finish a half-done commit from a reader, unless a builder holds the lock (it finishes it) or the library
    cannot be written (then the staged files are read where they are)."""
    try:
        lock = acquire_lock(paths.lock, timeout=0)
    except (LibraryBusyError, OSError):
        return
    try:
        meta = _read_metadata(paths)  # the lock was free: it may have been finished and superseded meanwhile
        if isinstance(meta, dict) and meta.get("commit"):
            for line in finish_commit(paths, meta["commit"]):
                print(line, file=sys.stderr)
    finally:
        lock.release()


def finish_commit(paths: LibraryPaths, commit: dict) -> list[str]:
    """Roll the committed state forward (under the library lock): rename its staged data files into place, make
    the file moves it records, and remove what crashed writes left (staged files of commits that never
    happened, temp files of the database's own names). Idempotent. Returns a line per move it could not make."""
    renamed = False
    for final in (paths.vectors, paths.segments):
        staged = staged_path(final, commit["id"])
        if staged.exists():
            rename(staged, final)
            renamed = True
    if renamed:
        fsync_dir(paths.vectors.parent)
    problems = []
    for source, target in commit.get("moves", []):
        source, target = paths.root / source, paths.root / target
        if not os.path.lexists(source):
            continue
        if not os.path.lexists(target):
            move_file(source, target)
        elif source.is_file() and target.is_file() and file_sha256(source) == file_sha256(target):
            remove(source)  # a copy across file systems finished, its source not yet removed: finish the move
        else:
            problems.append(f"Warning: {source} should have moved to {target}, which is another file now; "
                            f"left where it is.")
            continue
        _remove_empty_folders(source.parent, paths.new_music)
    for final in (paths.vectors, paths.segments, paths.metadata):
        for leftover in final.parent.glob(f".{final.name}.*"):
            if leftover.name.endswith(".tmp") or ".commit-" in leftover.name:
                remove(leftover)
    return problems


def recover_library(paths: LibraryPaths) -> list[str]:
    """Under the library lock, before a change: finish the last commit if a crash left it half done."""
    if not paths.metadata.exists():
        for final in (paths.vectors, paths.segments):  # staged files of a first commit that never happened
            for leftover in final.parent.glob(f".{final.name}.commit-*"):
                remove(leftover)
        return []
    try:
        meta = _read_metadata(paths)
    except DatabaseError:
        return []  # nothing committed can be read: the load after this says so (or --rebuild starts afresh)
    return finish_commit(paths, meta["commit"]) if isinstance(meta, dict) and meta.get("commit") else []


def check_clap_model(made_by: str | None, clap_model: str | None) -> None:
    """Refuse a database made by another CLAP checkpoint (either name None: nothing is known, nothing refused).

    A local directory is the same model however it is written: relative or absolute, through a symlink.
    """
    def identity(name: str) -> str:
        path = os.path.expanduser(name)
        return os.path.realpath(path) if os.path.isdir(path) else name

    if clap_model is not None and made_by is not None and identity(made_by) != identity(clap_model):
        raise DatabaseError(f"the database was made with CLAP model {made_by!r}, not {clap_model!r}; rebuild it "
                            f"with: python music_to_vector.py --rebuild --clap-model {clap_model}, or pass "
                            f"--clap-model {made_by}")


def _rows_are_unit(vectors: np.ndarray, chunk: int = 65_536) -> bool:
    """Every row finite and of length 1 within NORM_TOLERANCE; in chunks, so no (N, D) temporary is made."""
    for start in range(0, len(vectors), chunk):
        rows = np.asarray(vectors[start:start + chunk], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if not np.all(np.abs(norms - 1) < NORM_TOLERANCE):
            return False
    return True


def save_database(db: Database, paths: LibraryPaths, sample_rate: int,
                  moves: list[tuple[Path, Path]] = ()) -> list[str]:
    """Commit `db`, and the moves of files from new_music/ into processed_music/ that it lists, in one step.

    1. The vectors and segments are written under new names (staged_path) and fsynced; nothing names them yet.
    2. The commit point: the metadata, naming the commit, its files' sizes and the moves, replaces the old one
       atomically. Before it a reader sees the old library, after it the new one.
    3. finish_commit renames the staged files into place and makes the moves. A crash there is finished by the
       next load or build, from the metadata alone: nothing is embedded again.
    Must be called under the library lock. Returns finish_commit's problem lines.
    """
    commit = {"id": time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4),
              "moves": [[source.relative_to(paths.root).as_posix(), target.relative_to(paths.root).as_posix()]
                        for source, target in moves]}
    staged = []
    try:
        for kind, final, array in (("vectors", paths.vectors, db.vectors), ("segments", paths.segments, db.segments)):
            path = staged_path(final, commit["id"])
            staged.append(path)
            write_new_file(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=np.float32)))
            commit[f"{kind}_bytes"] = path.stat().st_size
        fsync_dir(paths.vectors.parent)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "clap_model": db.clap_model,
            "embedding": {"method": EMBEDDING_METHOD, "sample_rate": sample_rate, "window_s": db.window_s,
                          "dim": db.dim},
            "commit": commit,
            "tracks": db.tracks,
        }
        write_atomically(paths.metadata, lambda f: f.write(json.dumps(meta, indent=1, ensure_ascii=False).encode()))
    except BaseException:
        # Not committed (unless the failure came after the rename, while syncing the folder): drop what we staged.
        if _committed_id(paths) != commit["id"]:
            for path in staged:
                path.unlink(missing_ok=True)
        raise
    return finish_commit(paths, commit)


# ---------------------------------------------------------------------------------------------- search index


def index_path(vectors_path: Path) -> Path:
    return vectors_path.with_name(vectors_path.stem + "_index.faiss")


def vectors_fingerprint(vectors: np.ndarray, chunk: int = 1 << 16) -> bytes:
    """SHA-256 of the matrix's shape and float32 bytes: the identity of what an index was built from."""
    digest = hashlib.sha256(f"{INDEX_FORMAT.decode()} {vectors.shape}".encode())
    for start in range(0, len(vectors), chunk):
        digest.update(np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32).data)
    return digest.digest()


def build_search_index(vectors: np.ndarray):
    """A faiss inner-product index over unit float32 rows (N, D): IVF with about sqrt(N) lists, 8-bit codes.

    Its codes take 1 byte per dimension (a quarter of float32), and a query scans only the nearest lists; the
    caller re-scores the proposed rows exactly against `vectors`. Training uses a fixed-seed sample, so the same
    vectors always give the same index.
    """
    import faiss

    n, dim = vectors.shape
    lists = max(1, int(math.sqrt(n)))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False))  # 39/list: faiss
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, n, 65_536):
        index.add(np.ascontiguousarray(vectors[start:start + 65_536], dtype=np.float32))
    index.nprobe = min(lists, 32)
    return index


def load_search_index(vectors: np.ndarray, vectors_path: Path | None = None):
    """The index for `vectors`: read from the cache next to `vectors_path` when it was built from exactly these
    vectors, else built (and cached there when the folder is writable)."""
    import faiss

    fingerprint = vectors_fingerprint(vectors)
    cache = index_path(vectors_path) if vectors_path is not None else None
    if cache is not None and cache.exists():
        try:
            data = cache.read_bytes()
            if data[:len(INDEX_FORMAT)] == INDEX_FORMAT and data[len(INDEX_FORMAT):][:32] == fingerprint:
                return faiss.deserialize_index(np.frombuffer(data, np.uint8, offset=len(INDEX_FORMAT) + 32))
        except (OSError, RuntimeError):  # unreadable or corrupt cache: rebuild it below
            pass
    index = build_search_index(vectors)
    if cache is not None:
        try:
            blob = faiss.serialize_index(index)
            write_atomically(cache, lambda f: (f.write(INDEX_FORMAT), f.write(fingerprint), f.write(blob.data)))
        except OSError as e:  # a read-only library still works; it just rebuilds the index next time
            print(f"Warning: cannot cache the search index in {cache} ({e})", file=sys.stderr)
    return index


# ---------------------------------------------------------------------------------------------- read (decode)


@dataclass
class DecodedTrack:
    """One audio file read for embedding: mono float32 samples at the model's rate, tags, and identity."""

    source: Path
    sha256: str
    audio: np.ndarray
    sample_rate: int
    tags: dict

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def find_audio_files(folder: Path) -> list[Path]:
    """Audio files below `folder`, recursively, sorted so every run sees them in the same order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not p.name.startswith("."))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode to mono float32 at `sample_rate`. Raises AudioError with a reason a user can act on.

    FFmpeg's decoders, in process through PyAV (its wheel bundles them): every format, m4a/AAC included, with no
    system ffmpeg, and Opus twice as fast as libsndfile. The channels are averaged and the audio resampled with
    soxr (librosa.resample, "soxr_hq"), so the same file always gives the same samples.
    """
    import av
    import librosa

    if path.stat().st_size == 0:
        raise AudioError(f"{path.name} is an empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path.name} holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # Planar float at the stream's own rate and layout: a format change only, exact for integer PCM.
            to_float = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
            chunks, block = [], []
            for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the converter
                block += [f.to_ndarray() for f in to_float.resample(frame)]
                # The channels are averaged a few hundred frames at a time: a long stereo file is never held
                # as all its channels, and one mean per frame would cost a quarter more decoding time.
                if block and (len(block) >= MIX_FRAMES or frame is None):
                    chunks.append(np.concatenate(block, axis=1).mean(axis=0))
                    block = []
    except AudioError:
        raise
    except Exception as e:  # whatever FFmpeg or PyAV raise, this one file cannot be decoded
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, av.InvalidDataError):
            reason = "not an audio file this machine can decode (corrupt, or not audio)"
        raise AudioError(f"cannot decode {path.name}: {reason}") from e
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise AudioError(f"{path.name} holds no audio (zero length)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path.name} decodes to non-finite samples")
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return audio.astype(np.float32, copy=False)


def file_tags(path: Path) -> dict:
    """title/artist/genre as the file's own tags give them (missing keys are absent); {} when it has none."""
    import mutagen

    try:
        found = mutagen.File(path, easy=True)
        if found is not None and found.tags is not None:
            return {key: str(found.tags[key][0]).strip() for key in ("title", "artist", "genre")
                    if key in found.tags and found.tags[key]}
    except Exception:  # a tag reader failing must not stop an otherwise decodable file
        pass
    return {}


def read_tags(path: Path, library_folder: Path, tags: dict | None = None) -> dict:
    """title/artist/genre from the file's tags (`tags`, default: read now), else from its name; mood from its
    first folder under `library_folder`."""
    tags = file_tags(path) if tags is None else tags
    words = path.stem.lower().replace("-", "_").replace(" ", "_").split("_")
    relative = path.relative_to(library_folder) if path.is_relative_to(library_folder) else Path(path.name)
    return {
        "title": tags.get("title") or path.stem.replace("_", " "),
        "artist": tags.get("artist", ""),
        "genre": tags.get("genre") or next((w for w in words if w in GENRE_WORDS), ""),
        "mood": relative.parts[0] if len(relative.parts) > 1 else "",
    }


@dataclass
class KnownFile:
    """A file whose content the library already holds (found by its hash): not decoded again."""

    source: Path
    sha256: str


def read_track(path: Path, library_folder: Path, sample_rate: int,
               known: frozenset[str] | set[str] = frozenset()) -> DecodedTrack | KnownFile:
    """Reader: hash one file; unless its hash is in `known`, decode and tag it."""
    sha256 = file_sha256(path)
    if sha256 in known:
        return KnownFile(source=path, sha256=sha256)
    return DecodedTrack(source=path, sha256=sha256, audio=decode_audio(path, sample_rate),
                        sample_rate=sample_rate, tags=read_tags(path, library_folder))


# ---------------------------------------------------------------------------------------------- embed


def split_windows(audio: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full `window`-sample windows covering the whole track: (W, window) float32, the share of new audio each
    window adds (W,) float64, and where each starts, in samples (W,) int64.

    Window j starts at j * window, except the last, which ends at the track's end, overlapping the one before it:
    every window is music, never zero padding (whose window would be a poor best moment and a pull towards
    silence). It adds (len - (W-1) * window) / window of new audio. A track shorter than one window is repeated
    to fill it, as CLAP's repeatpad.
    """
    if len(audio) == 0:
        raise AudioError("zero-length audio")
    if len(audio) < window:
        repeated = np.tile(audio, math.ceil(window / len(audio)))[:window]
        return repeated[None, :].astype(np.float32), np.ones(1), np.zeros(1, np.int64)
    count = math.ceil(len(audio) / window)
    starts = np.arange(count, dtype=np.int64) * window
    starts[-1] = len(audio) - window
    windows = np.stack([audio[start:start + window] for start in starts]).astype(np.float32, copy=False)
    share = np.minimum(1.0, (len(audio) - np.arange(count) * window) / window)
    return windows, share, starts


def log_mel_features(extractor, windows: np.ndarray):
    """The CLAP model's input for exact-length windows float32 (B, N): a float32 tensor (B, C, frames, mels).

    What `extractor(...).input_features` gives, to float32 rounding. For the unfused checkpoint's extractor
    (rand_trunc, no top_db) it is computed here with one batched torch.stft in a third of the time or less:
    transformers' extractor loops over the 1001 frames of a window in Python, in float64. Any other configuration
    (a fused checkpoint's "fusion" stacks four views) is left to the extractor itself.
    """
    import torch
    from transformers import ClapFeatureExtractor

    if not (isinstance(extractor, ClapFeatureExtractor) and extractor.truncation == "rand_trunc"
            and extractor.top_db is None and windows.shape[1] == extractor.nb_max_samples):
        return extractor(list(windows), sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
    # Mirrors ClapFeatureExtractor._np_extract_fbank_features with mel_filters_slaney: periodic Hann window,
    # centred frames with reflect padding, power 2, then 10 * log10(max(mel, 1e-10)) with reference 1.
    audio = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    window = torch.hann_window(extractor.fft_window_size, periodic=True)
    power = torch.stft(audio, extractor.fft_window_size, extractor.hop_length, window=window, center=True,
                       pad_mode="reflect", return_complex=True).abs() ** 2
    mel = power.transpose(1, 2) @ torch.from_numpy(extractor.mel_filters_slaney).float()
    return (10 * torch.log10(torch.clamp(mel, min=1e-10)))[:, None]


def embed_windows(clap, windows: np.ndarray) -> np.ndarray:
    """CLAP audio embeddings of exact-length windows: float32 (W, D), rows L2-normalised.

    Windows are exactly the feature extractor's max length, so its random crop (rand_trunc) never fires: the same
    audio gives the same vectors on every run. Batches hold windows of one track only, for the same reason.
    """
    import torch

    extractor = clap.processor.feature_extractor
    if windows.shape[1] != extractor.nb_max_samples:
        raise ValueError(f"windows must be {extractor.nb_max_samples} samples, got {windows.shape[1]}")
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), WINDOWS_PER_BATCH):
            features = log_mel_features(extractor, windows[start:start + WINDOWS_PER_BATCH])
            embeds = clap.model(input_features=features.to(clap.device, clap.dtype)).audio_embeds
            out.append(torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def embed_track(clap, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mapper: one track → (track vector float32 (D,), window vectors float32 (W, D), last window's start in s).

    Vectors are unit-length. The track vector is the mean of the window vectors weighted by the new audio each
    window adds, so the last window, which overlaps the one before it, counts only for the music it adds.
    """
    extractor = clap.processor.feature_extractor
    windows, share, starts = split_windows(audio, extractor.nb_max_samples)
    segments = embed_windows(clap, windows)
    mean = (segments * share[:, None]).sum(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32), segments, float(starts[-1] / extractor.sampling_rate)


# ---------------------------------------------------------------------------------------------- build (write)


TAG_KEYS = ("title", "artist", "genre", "mood")


@dataclass
class BuildReport:
    """What a build did. Paths in `duplicates`/`failed` are files it left where they are."""

    added: list[dict] = field(default_factory=list)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    relocated: list[tuple[str, str]] = field(default_factory=list)  # (old file_path, new file_path)
    dropped: list[str] = field(default_factory=list)  # file_paths of tracks whose file is gone
    warnings: list[str] = field(default_factory=list)

    def problem_lines(self) -> list[str]:
        """One line for stderr per file that was not added (and why), moved, or gone."""
        return ([f"Note: {source} is already in the library as {listed_as}; left where it is."
                 for source, listed_as in self.duplicates] +
                [f"Note: {old} was moved to {new}; the library now lists it there." for old, new in self.relocated] +
                [f"Note: {gone} is no longer there; removed from the library." for gone in self.dropped] +
                self.warnings +
                [f"Error: {source}: {reason} (left where it is)" for source, reason in self.failed])

    @property
    def changed(self) -> bool:
        return bool(self.added or self.relocated or self.dropped)


def _prefetch(function, items, ahead: int = 2):
    """Yield (item, result or exception) in order while the next `ahead` items are computed in a thread.

    Decoding is I/O and C code that releases the GIL, so it overlaps with embedding the previous track.
    """
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(function, item) for item in items[:ahead]]
        for i, item in enumerate(items):
            if i + ahead < len(items):
                pending.append(pool.submit(function, items[i + ahead]))
            future = pending[i]
            try:
                yield item, future.result()
            except Exception as e:
                yield item, e
            pending[i] = None  # let the decoded audio go


def _destination(source: Path, paths: LibraryPaths, taken: set[Path]) -> Path:
    """Where a file from new_music/ goes in processed_music/: same sub-folders, never over another file."""
    target = paths.processed_music / source.relative_to(paths.new_music)
    stem, n = target.stem, 2
    while os.path.lexists(target) or target in taken:
        target = target.with_name(f"{stem} ({n}){target.suffix}")
        n += 1
    return target


def pending_files(paths: LibraryPaths, db: Database, files: list[Path] | None = None) -> list[Path]:
    """What a build would add: `files` (default: every audio file in new_music/), plus any audio file in
    processed_music/ that `db` does not list (moved there by hand, or by a run that stopped before saving)."""
    listed = {t["file_path"] for t in db.tracks}
    candidates = list(files) if files is not None else find_audio_files(paths.new_music)
    return candidates + [p for p in find_audio_files(paths.processed_music)
                         if p.relative_to(paths.root).as_posix() not in listed]


def build_library(clap, paths: LibraryPaths, rebuild: bool = False, lock_timeout: float = 600,
                  progress: bool = True, files: list[Path] | None = None) -> BuildReport:
    """Bring the database up to date with the music, in one commit, then move the added files into processed_music/.

    Reads (read_track) every file of new_music/ and every file of processed_music/ the database does not list;
    embeds (embed_track) those whose content is new; then commits (save_database) the added tracks, the tracks
    found again at another place (a file moved or renamed by hand, matched by its hash) and the removal of tracks
    whose file is gone, together with the moves. `rebuild` re-embeds every file (after a model change); `files`
    restricts the run to those files of new_music/. A file that fails stays where it is and is named in the
    report. Holds the library lock throughout, and first finishes a commit that a crash left half done.
    """
    from tqdm import tqdm

    extractor = clap.processor.feature_extractor
    sample_rate, window_s = extractor.sampling_rate, extractor.nb_max_samples / extractor.sampling_rate
    lock = acquire_lock(paths.lock, lock_timeout)
    try:
        report = BuildReport(warnings=recover_library(paths))
        try:
            old = load_database(paths)
        except DatabaseError:
            if not rebuild:
                raise
            # A broken database is what --rebuild is for: the music in processed_music/ is all it needs.
            old = empty_database(paths.root)
        if rebuild or len(old) == 0:
            db = empty_database(paths.root, clap.name)
        else:
            check_clap_model(old.clap_model, clap.name)  # refuse to mix vectors of two checkpoints
            db = old
        # What the old database knew about a file is kept on rebuild (a title fixed by hand, say).
        previous = {t.get("sha256"): t for t in old.tracks}
        tracks = [dict(t) for t in db.tracks]  # copies: a relocated track's record changes
        known = {t.get("sha256"): t for t in tracks}
        moves, taken, new_rows, new_segments = [], set(), [], []

        def read(path: Path):
            folder = paths.new_music if path.is_relative_to(paths.new_music) else paths.processed_music
            return read_track(path, folder, sample_rate, known.keys())

        candidates = pending_files(paths, db, files)
        for path, item in tqdm(_prefetch(read, candidates), total=len(candidates), desc="Embedding music",
                               unit="file", file=sys.stderr, disable=not progress or None):
            if isinstance(item, Exception):
                report.failed.append((path, str(item)))
            elif item.sha256 in known:
                _found_again(known[item.sha256], path, paths, report, moves, taken)
            else:
                try:
                    vector, segments, last_window_start_s = embed_track(clap, item.audio)
                except Exception as e:  # one bad file must not cost the others
                    report.failed.append((path, f"cannot embed {path.name}: {e}"))
                    continue
                final = _destination(path, paths, taken) if path.is_relative_to(paths.new_music) else path
                taken.add(final)
                if final != path:
                    moves.append((path, final))
                record = _new_record(item, final, paths, len(segments), last_window_start_s,
                                     previous.get(item.sha256))
                known[item.sha256] = record
                new_rows.append(vector)
                new_segments.append(segments)
                report.added.append(record)

        keep = _tracks_still_there(tracks, paths, taken, report)
        if report.changed or rebuild:
            db = _compose(db, [tracks[i] for i in keep], keep, report.added, new_rows, new_segments, clap.name,
                          window_s)
            report.warnings += save_database(db, paths, sample_rate, moves)
        else:  # only files of a commit that a crash stopped before its moves: the database already lists them
            for source, target in moves:
                move_file(source, target)
                _remove_empty_folders(source.parent, paths.new_music)
    finally:
        lock.release()
    return report


def _found_again(record: dict, path: Path, paths: LibraryPaths, report: BuildReport, moves: list,
                 taken: set[Path]) -> None:
    """A file whose content the library lists as `record`: a copy (left alone), the listed file moved or renamed
    by hand inside processed_music/ (the record follows it), or a file a crashed run had not moved yet."""
    listed = paths.root / record["file_path"]
    if os.path.lexists(listed) or listed in taken:
        report.duplicates.append((path, record["file_path"]))
    elif path.is_relative_to(paths.processed_music):
        old_path = record["file_path"]
        tags = file_tags(path)
        was = record.get("from_file") or read_tags(listed, paths.processed_music, tags)
        now = read_tags(path, paths.processed_music, tags)
        for key in TAG_KEYS:  # what came from the old name or folder follows the file; a hand edit stays
            if record.get(key) == was.get(key):
                record[key] = now[key]
        record["from_file"] = now
        record["file_path"] = path.relative_to(paths.root).as_posix()
        taken.add(path)
        report.relocated.append((old_path, record["file_path"]))
    else:
        moves.append((path, listed))
        taken.add(listed)


def _new_record(track: DecodedTrack, final: Path, paths: LibraryPaths, segment_count: int,
                last_window_start_s: float, previous: dict | None) -> dict:
    """The metadata of a newly embedded track (segment_offset is set when the database is composed).

    `from_file` keeps what the file's tags, name and folder gave, so a later change can tell a value fixed by hand
    (kept on --rebuild) from one that follows the file.
    """
    record = {
        "id": track.sha256[:16],
        **track.tags,
        "file_path": final.relative_to(paths.root).as_posix(),
        "duration_s": round(track.duration_s, 3),
        "sha256": track.sha256,
        "segment_offset": 0,
        "segment_count": segment_count,
        "last_window_start_s": round(last_window_start_s, 3),
        "from_file": dict(track.tags),
    }
    for key in TAG_KEYS:
        if previous and key in previous and previous[key] != (previous.get("from_file") or {}).get(key, object()):
            record[key] = previous[key]
    return record


def _tracks_still_there(tracks: list[dict], paths: LibraryPaths, taken: set[Path], report: BuildReport) -> list[int]:
    """The rows whose file is there (or about to be moved there); the others are named in report.dropped.

    When no listed file at all is there, the library folder is more likely wrong (another --library, a drive not
    mounted) than every file deleted: nothing is dropped and a warning says so.
    """
    there = [os.path.lexists(paths.root / t["file_path"]) or paths.root / t["file_path"] in taken for t in tracks]
    if tracks and not any(there):
        report.warnings.append(f"Warning: none of the {len(tracks)} tracks' files is in {paths.root}; is the "
                               f"library folder right? The database is left as it is.")
        return list(range(len(tracks)))
    report.dropped += [t["file_path"] for t, ok in zip(tracks, there) if not ok]
    return [i for i, ok in enumerate(there) if ok]


def _compose(db: Database, kept: list[dict], keep: list[int], added: list[dict], new_rows: list[np.ndarray],
             new_segments: list[np.ndarray], clap_name: str, window_s: float) -> Database:
    """The next state of the library: the kept rows of `db` (with their records `kept`), then the added tracks;
    segment offsets are numbered afresh in that order."""
    dim = len(new_rows[0]) if new_rows else db.dim
    segments, offset = [], 0
    for record, i in zip(kept, keep):
        count = int(record.get("segment_count", 0))
        if db.segments is not None and count:
            start = int(db.tracks[i]["segment_offset"])
            segments.append(db.segments[start:start + count])
        if "segment_count" in record:
            record["segment_offset"] = offset
        offset += count
    for record, rows in zip(added, new_segments):
        record["segment_offset"] = offset
        offset += len(rows)
    return Database(
        vectors=np.vstack([np.asarray(db.vectors).reshape(-1, dim)[keep], *new_rows]).astype(np.float32),
        tracks=kept + added,
        segments=np.vstack([np.zeros((0, dim), np.float32), *segments, *new_segments]).astype(np.float32),
        clap_model=clap_name,
        root=db.root,
        window_s=window_s,
    )


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to (not including) `top` while they are empty."""
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:  # not empty: a file the run could not add is still there
            return
        folder = folder.parent


def import_sample_library(paths: LibraryPaths) -> list[Path]:
    """Copy the tracks of the immich-memories-music package into new_music/<mood>/, with its licence.

    Tracks already in the library are not copied again. Returns the copied files (to pass to build_library).
    """
    try:
        import immich_memories_music
    except ImportError as e:
        raise RuntimeError(f"the sample library needs the {SAMPLE_PACKAGE} package: pip install "
                           f"{SAMPLE_PACKAGE}") from e
    from importlib import metadata

    have = {t.get("sha256") for t in load_database(paths).tracks}
    copied = []
    for source in sorted(immich_memories_music.tracks_dir().glob("*/*")):
        if source.suffix.lower() not in AUDIO_EXTENSIONS or file_sha256(source) in have:
            continue
        target = paths.new_music / source.parent.name / source.name
        copy_file(source, target)
        copied.append(target)
    licence = next(f for f in metadata.distribution(SAMPLE_PACKAGE).files if f.name.startswith("LICENSE"))
    paths.processed_music.mkdir(parents=True, exist_ok=True)
    copy_file(Path(licence.locate()), paths.processed_music / f"{SAMPLE_PACKAGE}-{licence.name}.txt")
    return copied


def format_library(db: Database) -> str:
    """The library as a readable table, one track a line."""
    header = f"{'#':>4}  {'title':<32} {'artist':<20} {'mood':<12} {'genre':<12} {'length':>7}  file"
    lines = [header]
    for i, t in enumerate(db.tracks, 1):
        minutes, seconds = divmod(round(float(t.get("duration_s", 0) or 0)), 60)
        lines.append(f"{i:>4}  {str(t.get('title', ''))[:32]:<32} {str(t.get('artist', ''))[:20]:<20} "
                     f"{str(t.get('mood', ''))[:12]:<12} {str(t.get('genre', ''))[:12]:<12} "
                     f"{minutes:>4}:{seconds:02d}  {t['file_path']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say where the library is: --library, --vectors, --meta (see LibraryPaths.at)."""
    parser.add_argument("--library", default=None,
                        help=f"library folder holding new_music/, processed_music/ and the database "
                             f"(default: ${HOME_ENV}, else this program's folder)")
    parser.add_argument("--vectors", default=None, help="database matrix (default: LIBRARY/music_database.npy)")
    parser.add_argument("--meta", default=None,
                        help="database metadata (default: LIBRARY/music_database_metadata.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="music_to_vector.py",
        description="Embed the audio files dropped into new_music/ with CLAP, add them to the music database and "
                    "move them to processed_music/.",
        formatter_class=HelpFormatter,
        epilog="example: cp ~/Music/*.mp3 new_music/calm/ && python music_to_vector.py",
    )
    add_library_arguments(parser)
    add_model_arguments(parser, blip=False)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rebuild", action="store_true",
                        help="re-embed every file in processed_music/ and new_music/ (after a model change)")
    action.add_argument("--list", action="store_true", help="print the library and exit")
    action.add_argument("--sample", action="store_true",
                        help=f"import the 28 MIT-licensed tracks of the {SAMPLE_PACKAGE} package")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    try:
        if args.list:
            db = load_database(paths)
            if not len(db):
                print("The library is empty: put audio files in new_music/ and run python music_to_vector.py "
                      "(or --sample for the bundled tracks).", file=sys.stderr)
                return 0
            print(format_library(db))
            return 0
        files = import_sample_library(paths) if args.sample else None
        if files is not None and not files:
            print("The sample tracks are already in the library.", file=sys.stderr)
            return 0
        from models import load_clap_audio

        clap = load_clap_audio(args.clap_model, args.precision)
        print(f"Updating the library in {paths.root} with {clap.name}...", file=sys.stderr)
        report = build_library(clap, paths, rebuild=args.rebuild, files=files)
    except KeyboardInterrupt:
        # Every change is one commit: the library is whole, as before this run or as its commit left it.
        print("Interrupted: nothing was lost; the library is as its last commit left it. Run again to finish.",
              file=sys.stderr)
        return 130
    except Exception as e:
        known = (DatabaseError, LibraryBusyError, RuntimeError, OSError, ValueError)
        if not isinstance(e, known):
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for line in report.problem_lines():
        print(line, file=sys.stderr)
    for record in report.added:
        print(f"added  {record['file_path']}  ({record['duration_s']:.1f} s, {record['segment_count']} windows)")
    total = len(load_database(paths))
    print(f"{len(report.added)} added, {len(report.failed)} failed, {total} tracks in the library.",
          file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
