"""Rendering a soundtrack plan (music_mood.soundtrack.Plan): the mixed audio, an audio file, a slideshow video, an
M3U8 playlist and the plan as JSON. write_outputs is what the CLI and the web app call; every file it writes is
replaced only when complete, and it never writes into the music library.

Audio: stereo float32 at 44.1 kHz. Each piece plays its stretch of its track; a piece's level is matched to the
others (below); an equal-power cross-fade joins two pieces; the soundtrack fades in and ends with a fade that
reaches zero on its last sample.
Video: H.264 (libx264) + AAC in MP4. Each photo is fitted on black without distortion, upright (EXIF); two photos
cross-fade over plan.photo_crossfade_s centred on their boundary. A photo that stands still is not encoded again
every frame: its frame is held for up to HOLD_S (an MP4 frame carries its own duration), which makes a slideshow
several times cheaper to encode than a constant frame rate and looks the same.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from music_mood.audio import AudioError, decode_stretches
from music_mood.images import ImageError, open_image
from music_mood.soundtrack import Piece, Plan
from music_mood.storage import replace_together

SAMPLE_RATE = 44100
VIDEO_SIZE = (1280, 720)
FPS = 25  # frames per second while photos cross-fade; a still photo is held (HOLD_S)
HOLD_S = 1.0  # a still photo's frame is repeated at least this often, for players that seek to the nearest frame
# x264 with tune=stillimage (its psychovisual settings for photos). superfast: 1.5× ultrafast's time for 40 % of its
# file size (CABAC); veryfast takes 1.6× superfast's time for a larger file (benchmarks/RESULTS.md, Soundtrack).
X264_PRESET = "superfast"
AAC_BIT_RATE = 192_000
AAC_OPTIONS = {"aac_coder": "fast"}  # 2.5× faster than FFmpeg's default (twoloop), transparent enough at 192 kb/s
# Loudness: each piece's gain brings its RMS to the duration-weighted mean (in dB) of all pieces' RMS, within
# ±GAIN_LIMIT_DB (a quiet intro is not lifted into noise), and never so far that the piece's own peak passes PEAK.
GAIN_LIMIT_DB = 12.0
PEAK = 0.98
SHORT_TRACK_TOLERANCE_S = 0.1  # a track may end this much before the plan says (decoders differ by a frame)
MIN_CROSSFADE_S = 0.02  # two pieces with less overlap than this are joined by a short dip instead
DIP_S = 0.01
OUTPUT_KINDS = {".mp4": "video", ".m4a": "audio", ".wav": "audio", ".m3u8": "playlist", ".m3u": "playlist",
                ".json": "plan"}
Step = Callable[[int, int], None]  # (done, total) after each step of a long job; raising from it stops the job


class RenderError(RuntimeError):
    """A plan cannot be rendered: a track or photo is missing or unreadable, or the plan contradicts itself."""


class RenderCancelled(Exception):
    """write_outputs stopped because should_stop() returned True; no output was written or replaced."""


# ---------------------------------------------------------------------------------------------------- audio mix

def mix_soundtrack(plan: Plan, sample_rate: int = SAMPLE_RATE, on_step: Step | None = None) -> np.ndarray:
    """The soundtrack: float32 (round(plan.total_s * sample_rate), 2), stereo, peak at most 1.

    Each piece plays [track_start_s, track_end_s) of its track at [start_s, end_s). At a boundary the outgoing
    track is read on past its end and the incoming one from before its start, up to crossfade_s / 2 each, as far
    as each track has audio, and they cross-fade with equal power (cos/sin gains) over the stretch where both
    have it. Each track is opened once and only its stretches are decoded. Raises RenderError.
    """
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    _check_pieces(plan, pieces)
    n = round(plan.total_s * sample_rate)
    edges = [min(round(p.start_s * sample_rate), n) for p in pieces] + [n]
    half = plan.crossfade_s / 2
    last = len(pieces) - 1
    # What each piece reads: from up to `half` before its start (not for the first) to `half` after its end (not
    # for the last); grouped by file so that each track is opened once.
    reads = []
    for k, piece in enumerate(pieces):
        from_s = max(0.0, piece.track_start_s - (half if k > 0 else 0.0))
        to_s = piece.track_start_s + (edges[k + 1] - edges[k]) / sample_rate + (half if k < last else 0.0)
        reads.append((from_s, to_s))
    by_file: dict[str, list[int]] = {}
    for k, piece in enumerate(pieces):
        by_file.setdefault(piece.file_path, []).append(k)
    audio: list[np.ndarray] = [np.zeros((0, 2), np.float32)] * len(pieces)
    for done, (file_path, indices) in enumerate(by_file.items(), 1):
        path = Path(plan.library_root) / file_path
        try:
            stretches = decode_stretches(path, [reads[k] for k in indices], sample_rate)
        except AudioError as e:
            raise RenderError(f"cannot play {path}: {e}") from e
        for k, stretch in zip(indices, stretches):
            audio[k] = stretch
        if on_step:
            on_step(done, len(by_file))
    # Per piece: samples before its start (`before`), its body, samples after its end (`after`).
    before, after = [], []
    for k, piece in enumerate(pieces):
        length = edges[k + 1] - edges[k]
        start = round((piece.track_start_s - reads[k][0]) * sample_rate)
        missing = start + length - len(audio[k])
        if missing > SHORT_TRACK_TOLERANCE_S * sample_rate:
            ends = reads[k][0] + len(audio[k]) / sample_rate
            raise RenderError(f"the track {piece.file_path} ends at {ends:.2f} s, but the plan plays it to "
                              f"{piece.track_end_s:.2f} s; plan again")
        if missing > 0:
            audio[k] = np.concatenate([audio[k], np.zeros((missing, 2), np.float32)])
        before.append(start)
        after.append(len(audio[k]) - start - length)
    gains = _matched_gains([a[b:len(a) - e] for a, b, e in zip(audio, before, after)])
    mix = np.zeros((n, 2), np.float32)
    fades = [_crossfade_span(edges[k], after[k - 1], before[k], sample_rate, n) for k in range(1, len(pieces))]
    for k in range(len(pieces)):
        fade_in = fades[k - 1][1] if k > 0 else None
        fade_out = fades[k][0] if k < last else None
        lo = fade_in[0] if fade_in else edges[k]
        hi = fade_out[1] if fade_out else edges[k + 1]
        envelope = np.full(hi - lo, gains[k], np.float32)
        if fade_in:
            envelope *= np.sin(_ramp(lo, hi, *fade_in) * (np.pi / 2))
        if fade_out:
            envelope *= np.cos(_ramp(lo, hi, *fade_out) * (np.pi / 2))
        offset = before[k] - (edges[k] - lo)
        mix[lo:hi] += audio[k][offset:offset + hi - lo] * envelope[:, None]
        audio[k] = None  # its samples are in the mix now
    fade = min(round(plan.fade_s * sample_rate), n // 2)
    if fade > 1:
        curve = np.sin(np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)) ** 2  # 0 → 1, flat at both ends
        mix[:fade] *= curve[:, None]
        mix[n - fade:] *= curve[::-1, None]  # its last value is 0: silent exactly at total_s
    peak = float(np.abs(mix).max(initial=0.0))
    if peak > 1.0:  # two loud tracks summed in a cross-fade: the whole soundtrack is turned down, not clipped
        mix *= PEAK / peak
    return mix


def _check_pieces(plan: Plan, pieces: list[Piece]) -> None:
    """The plan's contract for rendering: pieces in order, abutting, covering [0, total_s], each as long in its
    track as in the soundtrack. Raises RenderError naming the first piece that breaks it."""
    def fail(why: str):
        raise RenderError(f"the plan cannot be rendered: {why}")

    if not plan.total_s > 0:
        fail(f"its length is {plan.total_s} s")
    if not pieces:
        fail("it has no music (no scene has a piece)")
    tolerance = 1e-3
    if abs(pieces[0].start_s) > tolerance or abs(pieces[-1].end_s - plan.total_s) > tolerance:
        fail(f"its music runs from {pieces[0].start_s} s to {pieces[-1].end_s} s, not from 0 to {plan.total_s} s")
    for k, piece in enumerate(pieces):
        if not piece.end_s > piece.start_s or piece.track_start_s < 0:
            fail(f"piece {k} ({piece.file_path}) is empty or starts before its track")
        if abs((piece.end_s - piece.start_s) - (piece.track_end_s - piece.track_start_s)) > 0.01:
            fail(f"piece {k} ({piece.file_path}) is not as long in its track as in the soundtrack")
        if k and abs(piece.start_s - pieces[k - 1].end_s) > tolerance:
            fail(f"piece {k} ({piece.file_path}) does not start where piece {k - 1} ends")


def _matched_gains(bodies: list[np.ndarray]) -> list[float]:
    """One gain per piece: its RMS brought to the length-weighted mean level of all pieces (in dB), so a quiet
    track after a loud one does not drop; within ±GAIN_LIMIT_DB, and never past PEAK at the piece's own peak.

    Plain RMS over the piece, not a perceptual loudness (ITU BS.1770): close enough for music against music, and
    the pieces are long enough that a passing quiet bar does not move it much."""
    rms = np.array([max(float(np.sqrt(np.mean(np.square(b, dtype=np.float64)))) if b.size else 0.0, 1e-6)
                    for b in bodies])
    weights = np.array([max(len(b), 1) for b in bodies], np.float64)
    target = np.exp(np.average(np.log(rms), weights=weights))
    limit = 10 ** (GAIN_LIMIT_DB / 20)
    gains = []
    for body, level in zip(bodies, rms):
        gain = float(np.clip(target / level, 1 / limit, limit))
        peak = float(np.abs(body).max(initial=0.0))
        gains.append(min(gain, PEAK / peak) if peak * gain > PEAK else gain)
    return gains


def _crossfade_span(boundary: int, after: int, before: int, sample_rate: int, n: int):
    """((start, end) of the outgoing fade, (start, end) of the incoming one), in soundtrack samples within [0, n].

    Both tracks have audio over [boundary - before, boundary + after]: they cross-fade over all of it (but not
    before the soundtrack starts or after it ends, where a piece is shorter than half a cross-fade). Where that is
    too short to hear as a fade (both tracks end/start right at the boundary), the outgoing one fades out just
    before and the incoming one in just after, a dip of a few milliseconds instead of a click."""
    start, end = max(boundary - before, 0), min(boundary + after, n)
    if end - start >= MIN_CROSSFADE_S * sample_rate:
        return (start, end), (start, end)
    dip = round(DIP_S * sample_rate)
    return (max(boundary - dip, 0), boundary), (boundary, min(boundary + dip, n))


def _ramp(lo: int, hi: int, start: int, end: int) -> np.ndarray:
    """For samples lo..hi-1: 0 before `start`, 1 after `end`, linear between (float32, sample centres)."""
    positions = np.arange(lo, hi, dtype=np.float64) + 0.5
    return np.clip((positions - start) / max(end - start, 1), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- audio file

def write_audio(samples: np.ndarray, sample_rate: int, path: Path, on_step: Step | None = None) -> None:
    """`samples` (float32 (n, channels) or (n,)) as .m4a (AAC in MP4) or .wav (16-bit PCM), replaced atomically."""
    path = Path(path)
    kind = _output_kind(path)
    if kind != "audio":
        raise ValueError(f"{path.name}: an audio file is .m4a or .wav")
    with replace_together([path]) as (tmp,):
        _encode_audio_file(samples, sample_rate, tmp, path.suffix.lower(), on_step)


def _encode_audio_file(samples: np.ndarray, sample_rate: int, tmp: Path, suffix: str, on_step: Step | None):
    import av

    samples = _as_channels(samples)
    # ipod: FFmpeg's muxer for .m4a (MP4 with the brand iTunes and phones expect)
    muxer, codec = ("ipod", "aac") if suffix == ".m4a" else ("wav", "pcm_s16le")
    options = {"movflags": "+faststart"} if muxer == "ipod" else {}  # the index first: a web player starts at once
    with av.open(str(tmp), "w", format=muxer, options=options) as container:
        stream = _add_audio_stream(container, codec, sample_rate, samples.shape[1])
        chunk = sample_rate * 5
        for at in range(0, len(samples), chunk):
            _encode_audio(container, stream, samples, sample_rate, at, min(at + chunk, len(samples)))
            if on_step:
                on_step(min(at + chunk, len(samples)), len(samples))
        container.mux(stream.encode(None))


def _as_channels(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples
    if samples.ndim != 2 or samples.shape[1] not in (1, 2) or not len(samples):
        raise ValueError(f"samples must be float32 (n, 1 or 2) with n > 0, not {samples.shape}")
    return samples


def _add_audio_stream(container, codec: str, sample_rate: int, channels: int):
    stream = container.add_stream(codec, rate=sample_rate, layout="stereo" if channels == 2 else "mono",
                                  options=AAC_OPTIONS if codec == "aac" else {})
    if codec == "aac":
        stream.bit_rate = AAC_BIT_RATE * channels // 2
    return stream


def _encode_audio(container, stream, samples: np.ndarray, sample_rate: int, start: int, end: int) -> None:
    """Encode and mux samples[start:end] (PyAV cuts them into the encoder's frame size)."""
    import av

    if end <= start:
        return
    layout = "stereo" if samples.shape[1] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(samples[start:end], -1, 1).T), format="fltp",
                                       layout=layout)
    frame.sample_rate, frame.pts = sample_rate, start
    container.mux(stream.encode(frame))


# ---------------------------------------------------------------------------------------------------- video

def fit_photo(image, size: tuple[int, int] = VIDEO_SIZE) -> np.ndarray:
    """`image` (PIL) scaled to fit `size` (width, height) with its aspect ratio kept, centred on black: uint8
    (height, width, 3). Larger photos are scaled down, smaller ones up."""
    from PIL import Image

    width, height = size
    scale = min(width / image.width, height / image.height)
    fitted = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    # reducing_gap: a 24-megapixel photo is first shrunk by an integer factor, then resampled (3× faster)
    resized = image.resize(fitted, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = np.zeros((height, width, 3), np.uint8)
    left, top = (width - fitted[0]) // 2, (height - fitted[1]) // 2
    canvas[top:top + fitted[1], left:left + fitted[0]] = np.asarray(resized)
    return canvas


def write_video(plan: Plan, samples: np.ndarray, sample_rate: int, path: Path, size: tuple[int, int] = VIDEO_SIZE,
                fps: int = FPS, hold_s: float | None = HOLD_S, preset: str = X264_PRESET,
                on_step: Step | None = None) -> None:
    """The slideshow as MP4 (H.264 yuv420p BT.709 + AAC, index at the front for the web), replaced atomically.

    Photo i is shown over [start_s, end_s) of plan.photos[i]: fitted to `size`, upright, cross-fading with its
    neighbours over photo_crossfade_s centred on each boundary (it dominates exactly during its own time). The
    video lasts round(total_s * fps) frames. hold_s=None encodes every frame (a constant frame rate, for editors
    that want one); otherwise a still photo is encoded once per hold_s. `preset` is x264's. `samples` is the
    soundtrack (mix_soundtrack). on_step gets (frame, frames).
    """
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path.name}: a video is written as .mp4")
    _check_size(size)
    with replace_together([path]) as (tmp,):
        _encode_video(plan, samples, sample_rate, tmp, size, fps, hold_s, preset, on_step)


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"a video size must be even and at least 16×16 (yuv420p), not {width}×{height}")


def _encode_video(plan: Plan, samples: np.ndarray, sample_rate: int, tmp: Path, size: tuple[int, int], fps: int,
                  hold_s: float | None, preset: str, on_step: Step | None) -> None:
    import av

    samples = _as_channels(samples)
    frames = max(1, round(plan.total_s * fps))
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": preset, "tune": "stillimage"})
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        context = video.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709, as _yuv420p converts
        context.color_range = 1  # limited ("tv") range
        audio = _add_audio_stream(container, "aac", sample_rate, samples.shape[1])
        audio_done = 0
        for index, frame in _slideshow(plan, size, fps, frames, hold_s):
            # The audio runs a second ahead of the pictures, so the muxer interleaves them as it goes.
            until = min(len(samples), round((index / fps + 1.0) * sample_rate))
            _encode_audio(container, audio, samples, sample_rate, audio_done, until)
            audio_done = max(audio_done, until)
            frame.pts = index
            container.mux(video.encode(frame))
            if on_step:
                on_step(index + 1, frames)
        container.mux(video.encode(None))
        _encode_audio(container, audio, samples, sample_rate, audio_done, len(samples))
        container.mux(audio.encode(None))


def _slideshow(plan: Plan, size: tuple[int, int], fps: int, frames: int, hold_s: float | None):
    """(frame index, av.VideoFrame) for the frames to encode, in order; the frames not yielded repeat the last
    one. A still photo's frame is one VideoFrame, reused (x264 copies what it is given)."""
    import av

    photos = plan.photos
    if not photos:
        raise RenderError("the plan cannot be rendered: it has no photos")
    shortest = min(p.end_s - p.start_s for p in photos)
    half = max(0.0, min(plan.photo_crossfade_s, shortest)) / 2
    hold = max(1, round(hold_s * fps)) if hold_s else 1
    loaded: dict[int, tuple[np.ndarray, av.VideoFrame]] = {}

    def photo(i: int):
        if i not in loaded:
            for old in [j for j in loaded if j < i - 1]:
                del loaded[old]  # photos are shown in order: at most two are needed at once
            try:
                planes = _yuv420p(fit_photo(open_image(photos[i].path, fit_box=size), size))
            except ImageError as e:
                raise RenderError(f"cannot read the photo {photos[i].path}: {e}") from e
            loaded[i] = planes, av.VideoFrame.from_ndarray(planes, format="yuv420p")
        return loaded[i]

    current, shown, shown_at = 0, None, -hold
    for index in range(frames):
        t = index / fps
        while current < len(photos) - 1 and t >= photos[current].end_s:
            current += 1
        a, b, weight = current, current, 0
        if half and current + 1 < len(photos) and t >= photos[current].end_s - half:
            a, b, weight = current, current + 1, (t - photos[current].end_s + half) / (2 * half)
        elif half and current > 0 and t < photos[current].start_s + half:
            a, b, weight = current - 1, current, (t - photos[current].start_s + half) / (2 * half)
        level = round(min(max(weight, 0.0), 1.0) * 256)  # weight of b in 1/256
        key = (a,) if level == 0 else (b,) if level == 256 else (a, b, level)  # what is on screen
        if key == shown and index - shown_at < hold and index != frames - 1:
            continue  # the same still picture: the last frame encoded stays on screen
        shown, shown_at = key, index
        if len(key) == 1:
            yield index, photo(key[0])[1]
        else:
            first, second = photo(a)[0], photo(b)[0]
            blend = (first.astype(np.uint16) * (256 - level) + second.astype(np.uint16) * level + 128) >> 8
            yield index, av.VideoFrame.from_ndarray(blend.astype(np.uint8), format="yuv420p")


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (h, w, 3) → yuv420p planes (h * 3 / 2, w) uint8, BT.709 limited range (HD video's colours).
    Blending two of these is blending the pictures: the conversion is linear and the weights sum to 1."""
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG").to_ndarray()


# ---------------------------------------------------------------------------------------------------- small files

def playlist_text(plan: Plan, served: bool = False) -> str:
    """An M3U8 playlist: one entry per piece, in order, with VLC's start and stop times in its track. Each names its
    track's file by its absolute path, which a player on this machine opens; `served` (for a server's visitor, to
    whom the server's paths mean nothing and should not be told): by its path in the library."""
    lines = ["#EXTM3U"]
    for piece in (p for scene in plan.scenes for p in scene.pieces):
        title, artist = _one_line(piece.title), _one_line(piece.artist)
        name = f"{artist} - {title}" if artist else title
        lines += [f"#EXTINF:{round(piece.track_end_s - piece.track_start_s)},{name}",
                  f"#EXTVLCOPT:start-time={piece.track_start_s:.3f}",
                  f"#EXTVLCOPT:stop-time={piece.track_end_s:.3f}",
                  piece.file_path if served else str((Path(plan.library_root) / piece.file_path).absolute())]
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())  # a newline in a tag would start a new playlist line


def write_playlist(plan: Plan, path: Path) -> None:
    """The plan's pieces as an M3U8 playlist (UTF-8), replaced atomically."""
    with replace_together([Path(path)]) as (tmp,):
        tmp.write_text(playlist_text(plan), encoding="utf-8")


def write_plan(plan: Plan, path: Path) -> None:
    """The plan as JSON (Plan.from_dict reads it back), replaced atomically."""
    with replace_together([Path(path)]) as (tmp,):
        tmp.write_text(json.dumps(plan.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


THUMBNAIL_BOX = (240, 160)  # a page's thumbnails of the photos: fitted into this box, aspect kept


def write_thumbnails(plan: Plan, folder: Path, box: tuple[int, int] = THUMBNAIL_BOX,
                     should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """A small JPEG of each of plan.photos, upright and fitted into `box` (aspect kept, never enlarged), for a page
    that shows the plan: folder/000.jpg, 001.jpg... in the photos' order; returns their paths. A camera JPEG is
    decoded at a fraction of its size (open_image's fit_box). Raises RenderError for a photo that cannot be read
    (gone since it was planned), RenderCancelled when should_stop() says so between photos."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, photo in enumerate(plan.photos):
        if should_stop is not None and should_stop():
            raise RenderCancelled("rendering was cancelled")
        try:
            image = open_image(photo.path, fit_box=box)
        except ImageError as e:
            raise RenderError(f"cannot read the photo {photo.path}: {e}") from e
        image.thumbnail(box, Image.Resampling.LANCZOS)
        written.append(folder / f"{i:03d}.jpg")
        image.save(written[-1], quality=85)
    return written


# ---------------------------------------------------------------------------------------------------- dispatcher

def write_outputs(plan: Plan, outs: list[Path], progress: bool = True, should_stop: Callable[[], bool] | None = None,
                  size: tuple[int, int] = VIDEO_SIZE, on_progress: Callable[[float, str], None] | None = None,
                  fps: int = FPS, sample_rate: int = SAMPLE_RATE, served: bool = False) -> None:
    """Write each of `outs`, chosen by extension (OUTPUT_KINDS): .mp4 slideshow, .m4a / .wav soundtrack,
    .m3u8 / .m3u playlist, .json plan. The audio is mixed once for all that need it. The playlist and the plan
    name the tracks and photos by their paths on this machine; `served` (files a server hands to its visitors):
    by their paths in the library and their file names (playlist_text, Plan.to_served_dict).

    All or nothing: every output is written to a temporary file beside it and the files are renamed over their
    targets together, once all are complete; on an error, KeyboardInterrupt or cancel no target is touched and no
    temporary file is left. Checked before any work: the extensions (ValueError listing the supported ones), that
    no output is a file of the music library (ValueError), and that each folder can be written (OSError naming
    the path). should_stop() is asked between steps (tracks, frames, seconds of audio): True raises
    RenderCancelled. Progress: tqdm bars on stderr when `progress`, and on_progress(fraction, text) if given.
    Raises RenderError when a track or photo cannot be read.
    """
    outs = [Path(out) for out in outs]
    kinds = [_output_kind(out) for out in outs]
    _refuse_library_files(plan, outs)
    if "video" in kinds:
        _check_size(size)
    needs_audio = any(kind in ("audio", "video") for kind in kinds)
    weights = {"audio": 1.0, "video": 6.0, "playlist": 0.0, "plan": 0.0}  # rough shares of the time each takes
    stages = ([("Mixing audio", "track", 1.0)] if needs_audio else []) + [
        ({"video": "Rendering video", "audio": "Encoding audio"}.get(kind, f"Writing {out.name}"),
         "frame" if kind == "video" else "sample", weights[kind]) for out, kind in zip(outs, kinds)]
    tracker = _Progress(stages, progress, should_stop, on_progress)
    with replace_together(outs) as temps:
        samples = None
        if needs_audio:
            with tracker.stage() as step:
                samples = mix_soundtrack(plan, sample_rate, step)
        for out, tmp, kind in zip(outs, temps, kinds):
            with tracker.stage() as step:
                if kind == "video":
                    _encode_video(plan, samples, sample_rate, tmp, size, fps, HOLD_S, X264_PRESET, step)
                elif kind == "audio":
                    _encode_audio_file(samples, sample_rate, tmp, out.suffix.lower(), step)
                elif kind == "playlist":
                    tmp.write_text(playlist_text(plan, served), encoding="utf-8")
                else:
                    data = plan.to_served_dict() if served else plan.to_dict()
                    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tracker.check()  # a cancel during the last step still leaves every target as it was


def _output_kind(path: Path) -> str:
    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot write {path.name}: the output's extension must be one of "
                         f"{', '.join(OUTPUT_KINDS)}")
    return kind


def _refuse_library_files(plan: Plan, outs: list[Path]) -> None:
    """Rendering never changes the library: no output may be one of its tracks or lie in its music folders."""
    root = Path(plan.library_root).resolve()
    tracks = {(root / p.file_path).resolve() for scene in plan.scenes for p in scene.pieces}
    for out in outs:
        target = out.resolve()
        if target in tracks or any(target.is_relative_to(root / folder) for folder in ("new_music",
                                                                                      "processed_music")):
            raise ValueError(f"will not write {out}: it is in the music library ({root}); choose another place")


class _Progress:
    """The stages of one write_outputs call: a tqdm bar each on stderr, the overall fraction for on_progress, and
    the should_stop check after every step."""

    def __init__(self, stages: list[tuple[str, str, float]], show: bool, should_stop, on_progress):
        self.stages, self.show, self.should_stop, self.on_progress = stages, show, should_stop, on_progress
        self.total = sum(weight for _, _, weight in stages) or 1.0
        self.index, self.done = 0, 0.0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise RenderCancelled("rendering was cancelled; no file was written")

    @contextmanager
    def stage(self) -> Iterator[Step]:
        from tqdm import tqdm

        self.check()
        text, unit, weight = self.stages[self.index]
        bar = tqdm(desc=text, unit=unit, file=sys.stderr, disable=not self.show or None, total=None)

        def step(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)
            if self.on_progress is not None:
                self.on_progress(min(1.0, (self.done + weight * done / max(total, 1)) / self.total), text)
            self.check()

        try:
            yield step
        finally:
            bar.close()
        self.done += weight
        self.index += 1
        if self.on_progress is not None:
            self.on_progress(min(1.0, self.done / self.total), text)

