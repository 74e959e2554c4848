"""The reader: find audio files, hash them, decode them to mono float32 at the model's rate, and read their tags;
and, for rendering a soundtrack, decode only the stretches of a file that are played, in stereo."""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a")
GENRE_WORDS = ("acoustic", "electronic", "ambient", "classical", "jazz", "rock", "pop", "folk", "piano",
               "orchestral", "hiphop", "lofi", "blues", "country", "metal", "reggae", "soul", "funk")
MIX_FRAMES = 256  # decoded frames whose channels are averaged at once (~5 s of Opus)
# Decoded on each side of a stretch and dropped: more than an Opus decoder's 80 ms pre-roll after a seek, and the
# resampler's edges fall in it instead of in the stretch.
STRETCH_MARGIN_S = 0.25


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
        raise _decode_failure(path, e) from e
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise AudioError(f"{path.name} holds no audio (zero length)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path.name} decodes to non-finite samples")
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return audio.astype(np.float32, copy=False)


def _decode_failure(path: Path, e: Exception) -> AudioError:
    import av

    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, av.InvalidDataError):
        reason = "not an audio file this machine can decode (corrupt, or not audio)"
    return AudioError(f"cannot decode {path.name}: {reason}")


def decode_stretches(path: Path, stretches: list[tuple[float, float]], sample_rate: int,
                     layout: str = "stereo") -> list[np.ndarray]:
    """Samples [start_s, end_s) of each stretch of one file: float32 (n, channels) at `sample_rate`, n ==
    round((end_s - max(start_s, 0)) * sample_rate), or fewer where the file ends before end_s (none when it ends
    before start_s). Raises AudioError.

    The file is opened once; each stretch is reached by a seek and only it (and STRETCH_MARGIN_S on each side) is
    decoded, so a few seconds of a long track cost a few seconds of decoding. Where the seek cannot be trusted (a
    frame without a timestamp, or one after the place asked for), the stretch is decoded from the file's start.
    Channels are mixed to `layout` by FFmpeg; the rate is converted with soxr at the quality decode_audio uses.
    """
    import av

    if not path.is_file():
        raise AudioError(f"{path.name} does not exist" if not path.exists() else f"{path.name} is not a file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path.name} holds no audio stream")
            stream = container.streams.audio[0]
            return [_decode_stretch(container, stream, max(start_s, 0.0), end_s, sample_rate, layout)
                    for start_s, end_s in stretches]
    except AudioError:
        raise
    except Exception as e:  # whatever FFmpeg or PyAV raise, this one file cannot be decoded
        raise _decode_failure(path, e) from e


def _decode_stretch(container, stream, start_s: float, end_s: float, sample_rate: int, layout: str) -> np.ndarray:
    import soxr  # what librosa.resample(res_type="soxr_hq") calls, without librosa's 2-4 s first import

    wanted = max(0, round((end_s - start_s) * sample_rate))
    from_s = max(0.0, start_s - STRETCH_MARGIN_S)
    chunk, first_s = _decode_from(container, stream, from_s, end_s + STRETCH_MARGIN_S, layout)
    if first_s is None or first_s > from_s + 1e-3:  # the seek cannot be trusted: decode from the start
        chunk, first_s = _decode_from(container, stream, 0.0, end_s + STRETCH_MARGIN_S, layout)
        first_s = first_s or 0.0
    rate = stream.codec_context.sample_rate
    if rate != sample_rate:
        # Start the chunk on a sample that both rates share (every 160 samples for 48 kHz → 44.1 kHz): the stretch
        # then begins exactly at start_s, not up to half a sample off.
        first, period = round(first_s * rate), rate // math.gcd(rate, sample_rate)
        skip = -first % period
        chunk, first_s = chunk[:, skip:], (first + skip) / rate
        if chunk.shape[1]:
            chunk = soxr.resample(chunk.T, rate, sample_rate, quality="HQ").T
    begin = max(0, round((start_s - first_s) * sample_rate))
    stretch = chunk[:, begin:begin + wanted].T
    if not np.all(np.isfinite(stretch)):
        raise AudioError("decodes to non-finite samples")
    return np.ascontiguousarray(stretch, dtype=np.float32)


def _decode_from(container, stream, from_s: float, until_s: float, layout: str) -> tuple[np.ndarray, float | None]:
    """(channels, n) float32 at the stream's rate from the frame at or before `from_s` until past `until_s`, and
    the time of its first sample (None when the first frame has no timestamp after a seek)."""
    import av

    container.seek(int(from_s / stream.time_base), stream=stream, backward=True)
    rate = stream.codec_context.sample_rate
    to_float = av.AudioResampler(format="fltp", layout=layout, rate=rate)  # no rate change: sample-exact
    blocks, first_s = [], None
    for index, frame in enumerate(itertools.chain(container.decode(stream), [None])):  # None flushes
        if index == 0 and frame is not None:
            first_s = frame.time if frame.time is not None else (0.0 if from_s == 0 else None)
        blocks += [f.to_ndarray() for f in to_float.resample(frame)]
        if frame is not None and frame.time is not None and frame.time > until_s:
            break
    channels = av.AudioLayout(layout).nb_channels
    audio = np.concatenate(blocks, axis=1) if blocks else np.zeros((channels, 0), np.float32)
    return audio, first_s


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
