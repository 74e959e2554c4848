"""Encoding with PyAV (FFmpeg): the mixed soundtrack as an audio file (AAC in .m4a, or 16-bit .wav) and the
slideshow as a video (H.264 + AAC in MP4), each replaced atomically.

Video: each photo is fitted on black without distortion, upright (EXIF); two photos cross-fade over
plan.photo_crossfade_s centred on their boundary. A photo that stands still is not encoded again every frame: its
frame is held for up to HOLD_S (an MP4 frame carries its own duration), which makes a slideshow several times
cheaper to encode than a constant frame rate and looks the same.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from music_mood.images import ImageError, open_image
from music_mood.loudness import LIMITER_CEILING_DBTP, TRUE_PEAK_DBTP, TruePeakMeter, master_loudness
from music_mood.mix import RenderError, Step
from music_mood.plan import Plan
from music_mood.storage import replace_together

AUDIO_SUFFIXES = (".m4a", ".wav")
VIDEO_SIZE = (1280, 720)
FPS = 25  # frames per second while photos cross-fade; a still photo is held (HOLD_S)
HOLD_S = 1.0  # a still photo's frame is repeated at least this often, for players that seek to the nearest frame
# x264 with tune=stillimage (its psychovisual settings for photos). superfast: 1.5× ultrafast's time for 40 % of its
# file size (CABAC); veryfast takes 1.6× superfast's time for a larger file (benchmarks/RESULTS.md, Soundtrack).
X264_PRESET = "superfast"
AAC_BIT_RATE = 192_000
AAC_OPTIONS = {"aac_coder": "fast"}  # 2.5× faster than FFmpeg's default (twoloop), transparent enough at 192 kb/s
AAC_PEAK_MARGIN_DB = 0.2  # how far under TRUE_PEAK_DBTP the decoded AAC is brought when it overshoots
AAC_PEAK_ROUNDS = 3


def write_audio(samples: np.ndarray, sample_rate: int, path: Path, on_step: Step | None = None) -> None:
    """`samples` (float32 (n, channels) or (n,)) as .m4a (AAC in MP4) or .wav (16-bit PCM), replaced atomically."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise ValueError(f"{path.name}: an audio file is .m4a or .wav")
    with replace_together([path]) as (tmp,):
        encode_audio_file(samples, sample_rate, tmp, path.suffix.lower(), on_step)


def encode_audio_file(samples: np.ndarray, sample_rate: int, tmp: Path, suffix: str, on_step: Step | None):
    """Write `samples` into `tmp` as the audio file `suffix` names (.m4a or .wav); on_step gets (samples done,
    samples). The caller replaces the target with `tmp` (write_audio, or render.write_outputs with its others)."""
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


def keep_aac_true_peak(samples: np.ndarray, sample_rate: int, target_lufs: float) -> float:
    """Make sure the AAC of `samples` (the mix, float32 (n, channels), changed in place), decoded, keeps its true
    peak at most TRUE_PEAK_DBTP; returns that true peak (dBTP).

    The encoder's output overshoots its input's peaks, the more so the more of them a limiter has put at its
    ceiling (about 0.3 dB at -14 LUFS, 0.8 dB at -10 on the sample library). The mix is encoded here as .m4a and
    .mp4 encode it and measured decoded; if it passes, the mix is limited again under a ceiling lowered by the
    overshoot and brought back to `target_lufs` (loudness.master_loudness). The same samples then feed every
    output, so a .wav is what the .m4a decodes to, less the codec's noise."""
    ceiling = LIMITER_CEILING_DBTP
    for _ in range(AAC_PEAK_ROUNDS):
        peak = aac_true_peak_dbtp(samples, sample_rate)
        if peak <= TRUE_PEAK_DBTP - AAC_PEAK_MARGIN_DB / 2:  # a margin for other meters' resamplers
            break
        ceiling -= peak - (TRUE_PEAK_DBTP - AAC_PEAK_MARGIN_DB)
        master_loudness(samples, sample_rate, target_lufs, ceiling)
    return peak


def aac_true_peak_dbtp(samples: np.ndarray, sample_rate: int) -> float:
    """The true peak (dBTP) of `samples` encoded as AAC with the settings .m4a and .mp4 use, decoded: encoded into
    memory (ADTS, no container) and measured a frame at a time."""
    import io

    import av

    samples = _as_channels(samples)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as container:
        stream = _add_audio_stream(container, "aac", sample_rate, samples.shape[1])
        for at in range(0, len(samples), sample_rate * 5):
            _encode_audio(container, stream, samples, sample_rate, at, min(at + sample_rate * 5, len(samples)))
        container.mux(stream.encode(None))
    buffer.seek(0)
    meter = TruePeakMeter()
    with av.open(buffer, "r", format="adts") as container:
        for frame in container.decode(audio=0):
            meter.add(frame.to_ndarray().T)  # fltp: (channels, n)
    return meter.dbtp()


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
    check_size(size)
    with replace_together([path]) as (tmp,):
        encode_video(plan, samples, sample_rate, tmp, size, fps, hold_s, preset, on_step)


def check_size(size: tuple[int, int]) -> None:
    """ValueError unless (width, height) is a size yuv420p can encode: even, at least 16×16."""
    width, height = size
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"a video size must be even and at least 16×16 (yuv420p), not {width}×{height}")


def encode_video(plan: Plan, samples: np.ndarray, sample_rate: int, tmp: Path, size: tuple[int, int], fps: int,
                 hold_s: float | None, preset: str, on_step: Step | None) -> None:
    """Write the slideshow with its soundtrack into `tmp` (see write_video, which replaces its target with it)."""
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
