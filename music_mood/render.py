"""Rendering a soundtrack plan (music_mood.plan.Plan) into files: write_outputs, what the CLI and the web
app call, writes the mixed audio (mix.py) as an audio file, the slideshow video (encoding.py), an M3U8 playlist
and the plan as JSON; every file it writes is replaced only when complete, and it never writes into the music
library. Also the page's thumbnails of the photos.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from music_mood.encoding import (
    FPS,
    HOLD_S,
    VIDEO_SIZE,
    X264_PRESET,
    check_size,
    encode_audio_file,
    encode_video,
    fit_photo,
    keep_aac_true_peak,
    write_audio,
    write_video,
)
from music_mood.images import ImageError, open_image
from music_mood.mix import SAMPLE_RATE, RenderError, Step, mix_soundtrack
from music_mood.plan import Plan
from music_mood.remote import ServerConnections
from music_mood.storage import replace_together
from music_mood.timeline import mixed_audio_path, with_mixed_audio, write_timeline

# What the rest of the product imports from here: the stages' own names, with write_outputs.
__all__ = ["FPS", "HOLD_S", "OUTPUT_KINDS", "SAMPLE_RATE", "VIDEO_SIZE", "X264_PRESET", "RenderCancelled",
           "RenderError", "fit_photo", "mix_soundtrack", "playlist_text", "write_audio", "write_outputs",
           "write_plan", "write_playlist", "write_thumbnails", "write_video"]

OUTPUT_KINDS = {".mp4": "video", ".m4a": "audio", ".wav": "audio", ".m3u8": "playlist", ".m3u": "playlist",
                ".json": "plan", ".otio": "timeline", ".xml": "timeline", ".edl": "timeline"}


class RenderCancelled(Exception):
    """write_outputs stopped because should_stop() returned True; no output was written or replaced."""


def playlist_text(plan: Plan, served: bool = False) -> str:
    """An M3U8 playlist: one entry per piece, in order, with VLC's start and stop times in its track. Each names its
    track's file by its absolute path, which a player on this machine opens; `served` (for a server's visitor, to
    whom the server's paths mean nothing and should not be told): by its path in the library. A Subsonic server's
    song is a comment line naming it, since nothing a player could open without the server's password names it."""
    lines = ["#EXTM3U"]
    for piece in (p for scene in plan.scenes for p in scene.pieces):
        title, artist = _one_line(piece.title), _one_line(piece.artist)
        name = f"{artist} - {title}" if artist else title
        if piece.on_server:  # no path or URL plays it without the server's password: a comment, not an entry
            lines.append(f"# {name}: a song of a Subsonic server (song id {_one_line(piece.song_id)}), "
                         f"{piece.track_start_s:.3f} s to {piece.track_end_s:.3f} s")
            continue
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
                  fps: int = FPS, sample_rate: int = SAMPLE_RATE, served: bool = False,
                  servers: ServerConnections | None = None) -> None:
    """Write each of `outs`, chosen by extension (OUTPUT_KINDS): .mp4 slideshow, .m4a / .wav soundtrack,
    .m3u8 / .m3u playlist, .json plan, .otio / .xml / .edl editor's timeline (timeline.py), with the mixed
    soundtrack beside it as a .wav of the same name (timeline.with_mixed_audio). The audio is mixed once for all
    that need it. The playlist, the plan and the timelines name the tracks and photos by their paths on this
    machine; `served` (files a server hands to its visitors): by their paths in the library and their file names
    (playlist_text, Plan.to_served_dict, timeline.plan_timeline). A piece of a Subsonic server's song is
    downloaded through `servers` (remote.ServerConnections), once per call.

    All or nothing: every output is written to a temporary file beside it and the files are renamed over their
    targets together, once all are complete; on an error, KeyboardInterrupt or cancel no target is touched and no
    temporary file is left. Checked before any work: the extensions (ValueError listing the supported ones), that
    no output is a file of the music library (ValueError), and that each folder can be written (OSError naming
    the path). should_stop() is asked between steps (tracks, frames, seconds of audio): True raises
    RenderCancelled. Progress: tqdm bars on stderr when `progress`, and on_progress(fraction, text) if given.
    Raises RenderError when a track or photo cannot be read, or a server does not give its song; TimelineError
    when OpenTimelineIO cannot write a timeline.
    """
    outs = with_mixed_audio(outs)
    kinds = [_output_kind(out) for out in outs]
    _refuse_library_files(plan, outs)
    if "video" in kinds:
        check_size(size)
    needs_audio = any(kind in ("audio", "video") for kind in kinds)
    # rough shares of the time each takes
    weights = {"audio": 1.0, "video": 6.0, "playlist": 0.0, "plan": 0.0, "timeline": 0.0}
    stages = ([("Mixing audio", "track", 1.0)] if needs_audio else []) + [
        ({"video": "Rendering video", "audio": "Encoding audio"}.get(kind, f"Writing {out.name}"),
         "frame" if kind == "video" else "sample", weights[kind]) for out, kind in zip(outs, kinds)]
    tracker = _Progress(stages, progress, should_stop, on_progress)
    with replace_together(outs) as temps:
        samples = None
        if needs_audio:
            with tracker.stage() as step:
                samples = mix_soundtrack(plan, sample_rate, step, servers)
                if "video" in kinds or ".m4a" in (out.suffix.lower() for out in outs):
                    keep_aac_true_peak(samples, sample_rate, plan.loudness_lufs)  # the codec's overshoot too
        for out, tmp, kind in zip(outs, temps, kinds):
            with tracker.stage() as step:
                if kind == "video":
                    encode_video(plan, samples, sample_rate, tmp, size, fps, HOLD_S, X264_PRESET, step)
                elif kind == "audio":
                    encode_audio_file(samples, sample_rate, tmp, out.suffix.lower(), step)
                elif kind == "playlist":
                    tmp.write_text(playlist_text(plan, served), encoding="utf-8")
                elif kind == "timeline":
                    wav = mixed_audio_path(out)
                    write_timeline(plan, tmp, out.suffix, wav.name if served else wav.absolute(), served, out.stem)
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
    tracks = {(root / p.file_path).resolve() for scene in plan.scenes for p in scene.pieces if not p.on_server}
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

