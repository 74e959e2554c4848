"""The reader: find audio files, hash them, decode them to mono float32 at the model's rate, and read their tags."""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a")
GENRE_WORDS = ("acoustic", "electronic", "ambient", "classical", "jazz", "rock", "pop", "folk", "piano",
               "orchestral", "hiphop", "lofi", "blues", "country", "metal", "reggae", "soul", "funk")
MIX_FRAMES = 256  # decoded frames whose channels are averaged at once (~5 s of Opus)


class AudioError(ValueError):
    """An audio file cannot be decoded or holds no audio."""


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


@dataclass
class KnownFile:
    """A file whose content the library already holds (found by its hash): not decoded again."""

    source: Path
    sha256: str


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
                    if found.tags.get(key)}
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


def read_track(path: Path, library_folder: Path, sample_rate: int,
               known: frozenset[str] | set[str] = frozenset()) -> DecodedTrack | KnownFile:
    """Reader: hash one file; unless its hash is in `known`, decode and tag it."""
    sha256 = file_sha256(path)
    if sha256 in known:
        return KnownFile(source=path, sha256=sha256)
    return DecodedTrack(source=path, sha256=sha256, audio=decode_audio(path, sample_rate),
                        sample_rate=sample_rate, tags=read_tags(path, library_folder))
