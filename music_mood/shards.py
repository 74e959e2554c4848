"""The staging folder of a build on a cluster: one shard per embedded file, keyed by the file's SHA-256, and the two
stages that make a shard (decode a file; embed decoded audio), as plain Python that Ray runs on its workers.

A shard is `.ray-staging/<sha[:2]>/<sha>.npz` in the library folder, holding `vector` float32 (D,) and `segments`
float32 (W, D) (unit rows, exactly what embed.embed_track returns) and `info`: a JSON object stored as uint8 bytes,
so reading a shard never unpickles anything (format, version, sha256, clap_model, embedded_by, sample_rate,
window_samples, duration_s, last_window_start_s, bpm (audio.estimate_tempo, null when no beat stands out),
beats (beats.track_beats, null likewise) and file_tags, the tags the file itself carries). It is written
whole under a temp name and renamed, without fsync: a shard is a cache of work that nothing names. read_shard refuses
a torn shard (the zip's CRC), one of another model or window, or one whose vectors break the database contract;
that file is simply embedded again. The library's commit (library.save_database) stays the one commit point, and the
shards are removed after it.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_mood.audio import decode_audio, file_sha256, file_tags, read_rhythm
from music_mood.database import NORM_TOLERANCE
from music_mood.embed import embed_track
from music_mood.library import LibraryPaths
from music_mood.storage import remove, write_atomically

STAGING_FOLDER = ".ray-staging"
SHARD_FORMAT = "music-mood-shard"
SHARD_VERSION = 3  # 2: the tempo (bpm), 3: the beats; an older shard has not them, so its file is embedded again
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass
class Shard:
    """One file's content, embedded: what its library record and rows are made of (no path: a shard is keyed by
    content, and the same content anywhere in the library is the same shard)."""

    sha256: str
    vector: np.ndarray  # float32 (D,), unit
    segments: np.ndarray  # float32 (W, D), unit rows
    last_window_start_s: float
    duration_s: float
    embedded_by: str  # backend-precision of the worker that embedded it ("onnx-int8", "torch-bf16"...)
    file_tags: dict  # what audio.file_tags gave: the file's own title/artist/genre tags
    bpm: float | None = None  # audio.estimate_tempo of the decoded audio
    beats: dict | None = None  # beats.track_beats of the decoded audio


@dataclass
class EmbeddedTrack:
    """A file read and embedded elsewhere (by a cluster, into a shard): what build_library commits for it, without
    audio and without embedding anything. `tags` are the reader's (audio.read_tags at the file's place now)."""

    source: Path
    sha256: str
    tags: dict
    duration_s: float
    vector: np.ndarray
    segments: np.ndarray
    last_window_start_s: float
    embedded_by: str
    bpm: float | None = None  # the tempo the decoding stage read (audio.estimate_tempo)
    beats: dict | None = None  # and its beats (beats.track_beats)


def staging_folder(paths: LibraryPaths) -> Path:
    return paths.root / STAGING_FOLDER


def shard_path(folder: Path, sha256: str) -> Path:
    """Where the shard of content `sha256` lives: 256 sub-folders, so a million shards are 4 000 files a folder."""
    return folder / sha256[:2] / f"{sha256}.npz"


def encode_shard(shard: Shard, clap_model: str, sample_rate: int, window_samples: int) -> bytes:
    """The bytes of a shard file (an uncompressed .npz, CRC-checked when read)."""
    info = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "sha256": shard.sha256, "clap_model": clap_model,
            "embedded_by": shard.embedded_by, "sample_rate": int(sample_rate), "window_samples": int(window_samples),
            "duration_s": float(shard.duration_s), "last_window_start_s": float(shard.last_window_start_s),
            "bpm": shard.bpm, "beats": shard.beats, "file_tags": shard.file_tags}
    out = io.BytesIO()
    np.savez(out, vector=np.asarray(shard.vector, np.float32), segments=np.asarray(shard.segments, np.float32),
             info=np.frombuffer(json.dumps(info, ensure_ascii=False).encode(), np.uint8))
    return out.getvalue()


def write_shard(folder: Path, sha256: str, data: bytes) -> Path:
    """Put a shard's bytes (encode_shard) in place: whole or not at all, under its content's name."""
    if not _SHA.fullmatch(sha256):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    path = shard_path(folder, sha256)
    write_atomically(path, lambda f: f.write(data), durable=False)
    return path


def read_shard(folder: Path, sha256: str, clap_model: str, sample_rate: int, window_samples: int) -> Shard | None:
    """The shard of content `sha256` made with `clap_model` at this sample rate and window, or None when there is
    none, or only a torn, foreign or inconsistent one (the file is then embedded again)."""
    path = shard_path(folder, sha256)
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(data["info"].tobytes().decode())
            vector, segments = data["vector"], data["segments"]
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file (bad zip, CRC, JSON, missing member): not a shard we can use
        return None
    expected = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "sha256": sha256, "clap_model": clap_model,
                "sample_rate": sample_rate, "window_samples": window_samples}
    if not isinstance(info, dict) or any(info.get(key) != value for key, value in expected.items()):
        return None
    if (vector.dtype != np.float32 or segments.dtype != np.float32 or vector.ndim != 1 or segments.ndim != 2
            or len(segments) < 1 or segments.shape[1] != len(vector)):
        return None
    norms = np.linalg.norm(np.vstack([vector, segments]).astype(np.float64), axis=1)
    if not np.all(np.abs(norms - 1) < NORM_TOLERANCE):  # also false for NaN or inf
        return None
    return Shard(sha256=sha256, vector=vector, segments=segments,
                 last_window_start_s=float(info["last_window_start_s"]), duration_s=float(info["duration_s"]),
                 embedded_by=str(info["embedded_by"]), file_tags=dict(info.get("file_tags") or {}),
                 bpm=None if info.get("bpm") is None else float(info["bpm"]),
                 beats=info.get("beats") if isinstance(info.get("beats"), dict) else None)


def remove_staging(folder: Path) -> None:
    """Remove what builds on a cluster wrote to `folder`: shards and their temp files, then the emptied folders.
    Any other file found there is not ours and is left alone (and then so is its folder)."""
    if not folder.is_dir():
        return
    for sub in folder.iterdir():
        if not (sub.is_dir() and not sub.is_symlink() and re.fullmatch(r"[0-9a-f]{2}", sub.name)):
            continue
        for path in sub.iterdir():
            name = path.name
            ours = (re.fullmatch(rf"{sub.name}[0-9a-f]{{62}}\.npz", name)
                    or re.fullmatch(rf"\.{sub.name}[0-9a-f]{{62}}\.npz\..+\.tmp", name))
            if ours and path.is_file() and not path.is_symlink():
                remove(path)
        _remove_if_empty(sub)
    _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: something that is not ours is there
        pass


# ---------------------------------------------------------------------------------------------- the two stages


def decode_for_embedding(path: str, sha256: str, sample_rate: int) -> dict:
    """The decoding stage: one file → {"sha256", "path", "audio" float32 (n,), "file_tags" (JSON), "bpm" (its tempo,
    NaN for none: a column of floats), "beats" (JSON: its beat grid, or null), "error"}. The tempo and beats are
    read here, from the audio just decoded, as the plain builder's reader does.

    The file must still have the content the driver hashed (`sha256`): a shard is keyed by content, so audio of
    another content must never be stored under that name. A file that cannot be read or decoded gives an empty
    `audio` and the reason in `error`, as the plain builder reports it; nothing is raised, so one bad file never
    stops the others.
    """
    try:
        source = Path(path)
        if file_sha256(source) != sha256:
            raise OSError(f"{source.name} changed while it was being added; run again to add it as it is now")
        audio, tags = decode_audio(source, sample_rate), file_tags(source)
        rhythm = read_rhythm(audio, sample_rate)
    except Exception as e:  # every reason a file cannot be read is that file's failure, reported with its name
        return {"sha256": sha256, "path": path, "audio": np.zeros(0, np.float32), "file_tags": "{}",
                "bpm": float("nan"), "beats": "null", "error": str(e) or type(e).__name__}
    return {"sha256": sha256, "path": path, "audio": audio, "file_tags": json.dumps(tags, ensure_ascii=False),
            "bpm": float("nan") if rhythm["bpm"] is None else rhythm["bpm"], "beats": json.dumps(rhythm["beats"]),
            "error": ""}


class ShardEmbedder:
    """The embedding stage: decoded audio → a shard, with the CLAP audio model it holds (models.load_clap_audio).

    Plain Python; on a cluster each actor of the pool is one of these (cluster_pool.EmbedActor). `clap_model` is the
    name recorded in the shards: the driver's name for the checkpoint, which is what the commit checks them against.
    """

    def __init__(self, clap, clap_model: str | None = None):
        self.clap = clap
        self.clap_model = clap_model or clap.name

    def embed(self, sha256: str, audio: np.ndarray, tags: dict, bpm: float | None = None,
              beats: dict | None = None) -> bytes:
        """One decoded track (float32 (n,) at the model's rate, and its tempo) → the bytes of its shard
        (encode_shard)."""
        runtime = self.clap.runtime
        vector, segments, last_window_start_s = embed_track(self.clap, audio)
        shard = Shard(sha256=sha256, vector=vector, segments=segments, last_window_start_s=last_window_start_s,
                      duration_s=len(audio) / runtime.sampling_rate, embedded_by=self.clap.embedded_by,
                      file_tags=tags, bpm=bpm, beats=beats)
        return encode_shard(shard, self.clap_model, runtime.sampling_rate, runtime.window_samples)

    def embed_decoded(self, decoded: dict) -> dict:
        """One row of the decoding stage (decode_for_embedding) → {"shard": bytes (encode_shard), "error"}. A row that
        failed to decode keeps its reason; one that fails to embed gets its own, and no shard."""
        path, error = Path(str(decoded["path"])), str(decoded["error"])
        if error:
            return {"shard": b"", "error": error}
        try:
            bpm = float(decoded["bpm"])
            shard = self.embed(str(decoded["sha256"]), np.asarray(decoded["audio"], np.float32),
                               json.loads(str(decoded["file_tags"])), None if np.isnan(bpm) else bpm,
                               json.loads(str(decoded.get("beats", "null"))))
        except Exception as e:  # one bad file must not cost the others
            return {"shard": b"", "error": f"cannot embed {path.name}: {e}"}
        return {"shard": shard, "error": ""}
