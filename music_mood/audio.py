"""The reader: find audio files, hash them, decode them to mono float32 at the model's rate, read their tags, and
estimate their tempo from the decoded audio; and, for rendering a soundtrack, decode only the stretches of a file
that are played, in stereo."""
from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from music_mood.beats import averaged_down, grid_tempo, peak_offset, track_beats

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a")
GENRE_WORDS = ("acoustic", "electronic", "ambient", "classical", "jazz", "rock", "pop", "folk", "piano",
               "orchestral", "hiphop", "lofi", "blues", "country", "metal", "reggae", "soul", "funk")
FILE_TAG_KEYS = ("title", "artist", "genre", "mood")  # what file_tags reads (mutagen's easy keys)
MIX_FRAMES = 256  # decoded frames whose channels are averaged at once (~5 s of Opus)
# Decoded on each side of a stretch and dropped: more than an Opus decoder's 80 ms pre-roll after a seek, and the
# resampler's edges fall in it instead of in the stretch.
STRETCH_MARGIN_S = 0.25
# Tempo is estimated on the middle TEMPO_EXCERPT_S of a track (a long mix costs no more than a song, and an intro or
# outro without a beat weighs less), brought down to about TEMPO_RATE Hz: onsets need no more, and a quarter of the
# samples cost a quarter of the spectrogram. The hop gives ~47 onset frames a second, as librosa's defaults do
# (512 at 22 050 Hz); the autocorrelation looks at lags up to TEMPO_LAGS_S, librosa's default too.
TEMPO_EXCERPT_S = 120.0
TEMPO_RATE = 12_000
TEMPO_N_FFT = 1024
TEMPO_HOP = 256
TEMPO_MELS = 64
TEMPO_LAGS_S = 8.0
TEMPO_MIN_S = 4.0  # shorter audio holds too few beats for a tempo
# The onset envelope is smoothed over ~100 ms so that a beat whose period falls between two lags still makes one
# clear peak rather than two halves (which would lose to the peak at twice the period).
TEMPO_SMOOTHING = np.hanning(7)[1:-1] / np.hanning(7)[1:-1].sum()
# A beat must stand out: the chosen lag's strength at least this many times the median strength over 40-240 BPM.
# Noise, a steady tone or a drone measure 1.05-1.10; the 28 sample tracks 1.27-1.98.
TEMPO_MIN_CLARITY = 1.15


class AudioError(ValueError):
    """An audio file cannot be decoded or holds no audio."""


@dataclass(frozen=True)
class AudioBytes:
    """A whole audio file held in memory (a song downloaded from a server): decoded as a file on disk would be,
    never written to one. `name` stands for the file's name in errors ("Song Title.mp3")."""

    name: str
    data: bytes = field(repr=False)

    def open(self):
        """A PyAV container reading the bytes (close it: `with`)."""
        import av

        return av.open(io.BytesIO(self.data))


AudioSource = Path | AudioBytes  # what the decoders take: a file, or a file's bytes


def _open(source: AudioSource):
    import av

    return source.open() if isinstance(source, AudioBytes) else av.open(str(source))


def _is_empty(source: AudioSource) -> bool:
    return len(source.data) == 0 if isinstance(source, AudioBytes) else source.stat().st_size == 0


@dataclass
class DecodedTrack:
    """One audio file read for embedding: mono float32 samples at the model's rate, tags, and identity."""

    source: Path
    sha256: str
    audio: np.ndarray
    sample_rate: int
    tags: dict
    bpm: float | None = None  # estimate_tempo(audio, sample_rate)
    beats: dict | None = None  # beats.track_beats: the beat grid (None: no steady beat)

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


def decode_audio(path: AudioSource, sample_rate: int) -> np.ndarray:
    """Decode a file (or its bytes, AudioBytes) to mono float32 at `sample_rate`. Raises AudioError with a reason a
    user can act on.

    FFmpeg's decoders, in process through PyAV (its wheel bundles them): every format, m4a/AAC included, with no
    system ffmpeg, and Opus twice as fast as libsndfile. The channels are averaged and the audio resampled with
    soxr (librosa.resample, "soxr_hq"), so the same file always gives the same samples.
    """
    import av
    import librosa

    if _is_empty(path):
        raise AudioError(f"{path.name} is an empty file (0 bytes)")
    try:
        with _open(path) as container:
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


def _decode_failure(path: AudioSource, e: Exception) -> AudioError:
    import av

    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, av.InvalidDataError):
        reason = "not an audio file this machine can decode (corrupt, or not audio)"
    return AudioError(f"cannot decode {path.name}: {reason}")


def decode_stretches(path: AudioSource, stretches: list[tuple[float, float]], sample_rate: int,
                     layout: str = "stereo") -> list[np.ndarray]:
    """Samples [start_s, end_s) of each stretch of one file: float32 (n, channels) at `sample_rate`, n ==
    round((end_s - max(start_s, 0)) * sample_rate), or fewer where the file ends before end_s (none when it ends
    before start_s). Raises AudioError.

    The file is opened once; each stretch is reached by a seek and only it (and STRETCH_MARGIN_S on each side) is
    decoded, so a few seconds of a long track cost a few seconds of decoding. Where the seek cannot be trusted (a
    frame without a timestamp, or one after the place asked for), the stretch is decoded from the file's start.
    Channels are mixed to `layout` by FFmpeg; the rate is converted with soxr at the quality decode_audio uses.
    """
    if isinstance(path, Path) and not path.is_file():
        raise AudioError(f"{path.name} does not exist" if not path.exists() else f"{path.name} is not a file")
    try:
        with _open(path) as container:
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


def estimate_tempo(audio: np.ndarray, sample_rate: int) -> float | None:
    """The tempo of mono float32 audio in beats per minute, to one decimal; None when no beat stands out (silence,
    noise, a drone) or there is less than TEMPO_MIN_S of audio.

    librosa's estimator on the middle TEMPO_EXCERPT_S, averaged down to about TEMPO_RATE Hz: the onset strength,
    its tempogram averaged over the excerpt, and librosa.feature.tempo, whose log-normal prior around 120 BPM
    settles between half and double tempo. librosa picks a whole lag of onset frames, ~6 BPM apart at 128 BPM; a
    parabola through the averaged tempogram around that lag places the peak between frames, so the figure is good
    to about 1 BPM. About 30 ms of one core for a 30 s track, a few per cent of embedding it
    (benchmarks/bench_build.py measures it). NumPy's BLAS runs on one thread meanwhile: the estimate shares the
    machine with the embedding, and BLAS's idle threads would spin on the cores the embedding needs (they doubled
    its CPU time).
    """
    with _blas_pools().limit(limits=1, user_api="blas"):
        return _tempo_of(audio, sample_rate)


@functools.lru_cache(maxsize=1)
def _blas_pools():
    """The process's BLAS thread pools (NumPy's and SciPy's OpenBLAS), found once, after librosa's modules that
    the estimate uses have loaded SciPy's."""
    import librosa.feature
    import librosa.onset  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _tempo_of(audio: np.ndarray, sample_rate: int) -> float | None:
    """estimate_tempo's work, on whatever BLAS threads it is given."""
    import librosa
    import librosa.feature
    import librosa.onset

    excerpt = int(TEMPO_EXCERPT_S * sample_rate)
    if len(audio) > excerpt:
        start = (len(audio) - excerpt) // 2
        audio = audio[start:start + excerpt]
    if len(audio) < TEMPO_MIN_S * sample_rate:
        return None
    y, rate = averaged_down(audio, sample_rate, TEMPO_RATE)
    onsets = librosa.onset.onset_strength(y=y, sr=rate, n_fft=TEMPO_N_FFT, hop_length=TEMPO_HOP, n_mels=TEMPO_MELS)
    if not np.any(onsets > 0):
        return None
    onsets = np.convolve(onsets, TEMPO_SMOOTHING, mode="same")
    lags = int(librosa.time_to_frames(TEMPO_LAGS_S, sr=rate, hop_length=TEMPO_HOP))
    tempogram = librosa.feature.tempogram(onset_envelope=onsets, sr=rate, hop_length=TEMPO_HOP, win_length=lags)
    strength = tempogram.mean(axis=1)  # (lags,): how strongly the onsets repeat at each lag over the excerpt
    bpm = float(librosa.feature.tempo(tg=strength[:, None], sr=rate, hop_length=TEMPO_HOP)[0])
    lag = round(60 * rate / (TEMPO_HOP * bpm))  # the lag librosa chose (its bpm is 60 * rate / (hop * lag))
    band = strength[round(60 * rate / (TEMPO_HOP * 240)):round(60 * rate / (TEMPO_HOP * 40)) + 1]
    if not 0 < lag < lags - 1 or not strength[lag] >= TEMPO_MIN_CLARITY * np.median(band):
        return None
    return round(60 * rate / (TEMPO_HOP * (lag + peak_offset(*strength[lag - 1:lag + 2]))), 1)


def file_tags(path: AudioSource) -> dict:
    """title/artist/genre/mood as the file's own tags (or its bytes', AudioBytes) give them (missing keys are
    absent); {} when it has none. mood is ID3's TMOO or a Vorbis/Opus/FLAC MOOD comment."""
    import mutagen

    try:
        found = mutagen.File(io.BytesIO(path.data) if isinstance(path, AudioBytes) else path, easy=True)
        if found is not None and found.tags is not None:
            return {key: str(found.tags[key][0]).strip() for key in FILE_TAG_KEYS if found.tags.get(key)}
    except Exception:  # a tag reader failing must not stop an otherwise decodable file
        pass
    return {}


def read_tags(path: Path, library_folder: Path, tags: dict | None = None) -> dict:
    """title/artist/genre from the file's tags (`tags`, default: read now), else from its name; mood from its tags,
    else from its first folder under `library_folder`."""
    tags = file_tags(path) if tags is None else tags
    words = path.stem.lower().replace("-", "_").replace(" ", "_").split("_")
    relative = path.relative_to(library_folder) if path.is_relative_to(library_folder) else Path(path.name)
    return {
        "title": tags.get("title") or path.stem.replace("_", " "),
        "artist": tags.get("artist", ""),
        "genre": tags.get("genre") or next((w for w in words if w in GENRE_WORDS), ""),
        "mood": tags.get("mood") or (relative.parts[0] if len(relative.parts) > 1 else ""),
    }


def read_track(path: Path, library_folder: Path, sample_rate: int,
               known: frozenset[str] | set[str] = frozenset()) -> DecodedTrack | KnownFile:
    """Reader: hash one file; unless its hash is in `known`, decode and tag it and estimate its tempo."""
    sha256 = file_sha256(path)
    if sha256 in known:
        return KnownFile(source=path, sha256=sha256)
    audio = decode_audio(path, sample_rate)
    return DecodedTrack(source=path, sha256=sha256, audio=audio, sample_rate=sample_rate,
                        tags=read_tags(path, library_folder), **read_rhythm(audio, sample_rate))


def read_rhythm(audio: np.ndarray, sample_rate: int) -> dict:
    """{"bpm": the tempo, "beats": the beat grid (beats.track_beats)}: what every track added gets, and what a listed
    track without them (or with a grid found by a weaker tracker) gets from its file decoded again. estimate_tempo
    tells whether there is a steady beat at all; where there is, the tempo is the grid's own, so that a soundtrack's
    table shows the tempo its cuts follow. BLAS on one thread, as for the tempo."""
    bpm = estimate_tempo(audio, sample_rate)
    with _blas_pools().limit(limits=1, user_api="blas"):
        beats = track_beats(audio, sample_rate, bpm)
    return {"bpm": grid_tempo(beats) if beats else bpm, "beats": beats}
