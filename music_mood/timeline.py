"""A soundtrack plan as a video editor's timeline, written by OpenTimelineIO and its adapters: .otio (its own JSON),
.xml (Final Cut Pro 7 XML, which Premiere Pro and DaVinci Resolve import) and .edl (CMX 3600). The photos on a
video track, the stretches of music on an audio track with their cross-fades, markers on the scene changes and
the beats; render.write_outputs writes them, and the mixed soundtrack beside each as a .wav of the same stem."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from music_mood.mix import RenderError
from music_mood.plan import Piece, Plan

# Frames a second of every timeline: the plan's times are rounded to frames of this rate (25, PAL's, is one that
# every editor takes, and a frame of it is what the timeline's times are tested to).
TIMELINE_RATE = 25
# The OpenTimelineIO adapter that writes each kind, by the file's extension (otio_fcp_adapter,
# otio_cmx3600_adapter). A CMX 3600 EDL is one list of events: the adapter writes the timeline's first track
# only, the photos; the music is the .wav beside it.
TIMELINE_ADAPTERS = {".otio": "otio_json", ".xml": "fcp_xml", ".edl": "cmx_3600"}
MIXED_AUDIO_SUFFIX = ".wav"  # the mixed soundtrack beside a timeline: uncompressed, which every editor reads
SCENE_COLOR, DOWNBEAT_COLOR, BEAT_COLOR = "RED", "ORANGE", "YELLOW"  # otio.schema.MarkerColor names
# Final Cut Pro 7's own audio cross-fade: the adapter's default transition effect is a video dissolve.
AUDIO_CROSSFADE_EFFECT = {"name": "Cross Fade (+3dB)", "effectid": "KGAudioTransCrossFade3dB",
                          "effectcategory": "audio", "effecttype": "transition", "mediatype": "audio"}


class TimelineError(RenderError):
    """A timeline could not be made: OpenTimelineIO or its adapter is not installed, or refused the timeline (a
    RenderError, which the CLI and the page report as one line)."""


def is_timeline(path: Path) -> bool:
    return Path(path).suffix.lower() in TIMELINE_ADAPTERS


def mixed_audio_path(timeline: Path) -> Path:
    """The mixed soundtrack written beside `timeline`: the same name with MIXED_AUDIO_SUFFIX."""
    return Path(timeline).with_suffix(MIXED_AUDIO_SUFFIX)


def with_mixed_audio(outs: list[Path]) -> list[Path]:
    """What write_outputs writes for `outs`: each of them, then the mixed .wav beside each timeline among them that
    `outs` does not name already (each once), so that callers check and report every file it writes."""
    outs = [Path(out) for out in outs]
    named = {out.absolute() for out in outs}
    extra = []
    for out in outs:
        wav = mixed_audio_path(out)
        if is_timeline(out) and wav.absolute() not in named:
            named.add(wav.absolute())
            extra.append(wav)
    return outs + extra


def write_timeline(plan: Plan, path: Path, suffix: str, mixed_audio: Path | str | None = None,
                   served: bool = False, name: str = "") -> None:
    """Write `plan`'s timeline (plan_timeline) into `path` in the kind `suffix` names (TIMELINE_ADAPTERS; `path` may
    be a temporary file of another name). Raises TimelineError when OpenTimelineIO cannot write it."""
    otio = _opentimelineio()
    adapter = TIMELINE_ADAPTERS[suffix.lower()]
    # Final Cut Pro 7 XML places a transition's cut at its middle: a fade longer on one side would move the cut.
    # OpenTimelineIO's EDL writer turns a dissolve into events that move the cuts: an EDL's photos cut.
    timeline = plan_timeline(plan, mixed_audio, served, name, centred_fades=adapter == "fcp_xml",
                             dissolves=adapter != "cmx_3600")
    if adapter == "cmx_3600":
        _markers_onto_photos(timeline)
    try:
        otio.adapters.write_to_file(timeline, str(path), adapter_name=adapter)
    except (otio.exceptions.OTIOError, ValueError) as e:
        raise TimelineError(f"OpenTimelineIO could not write the timeline as {suffix}: {e}") from e


def plan_timeline(plan: Plan, mixed_audio: Path | str | None = None, served: bool = False, name: str = "",
                  centred_fades: bool = False, dissolves: bool = True):
    """`plan` as an otio.schema.Timeline at TIMELINE_RATE, starting at 0: a video track "Photos" (a clip per photo
    at its time, for its length; with `dissolves`, cross-dissolves of the plan's photo_crossfade_s centred on each
    change, as in the MP4), an audio track "Music" (a clip per piece: its track's file, played from its in
    point for its length, a Transition where a cross-fade joins two), then, given `mixed_audio` (the mixed
    soundtrack's file), an audio track "Mix" holding it whole. Markers on the timeline's stack: each scene's start
    (red), and each piece's downbeats (orange) and other beats (yellow) when the plan has them, in time order.
    `centred_fades`: a cross-fade shortened on one side is as short on the other, centred on the cut.

    Files are named by absolute file URLs, which an editor on this machine opens at once; `served` (for a
    server's visitor, to whom the server's paths mean nothing): by relative URLs, a photo by its file name and a
    track by its path in the library, which an editor relinks. A server's song has no file: a MissingReference
    named by its title."""
    otio = _opentimelineio()
    timeline = otio.schema.Timeline(name=name or plan.text or "Soundtrack",
                                    global_start_time=otio.opentime.RationalTime(0, TIMELINE_RATE))
    timeline.tracks.append(_photo_track(otio, plan, served, dissolves))
    timeline.tracks.append(_music_track(otio, plan, served, centred_fades))
    if mixed_audio is not None:
        mix = otio.schema.Track(name="Mix", kind=otio.schema.TrackKind.Audio)
        length = _range(otio, 0, _frame(plan.total_s))
        mix.append(otio.schema.Clip(name=Path(mixed_audio).name, source_range=length, media_reference=(
            otio.schema.ExternalReference(target_url=_url(Path(mixed_audio), served), available_range=length))))
        timeline.tracks.append(mix)
    timeline.tracks.markers.extend(_markers(otio, plan))
    return timeline


def _photo_track(otio, plan: Plan, served: bool, dissolves: bool):
    """The photos in order, each a still clip at its frames. A still has no time of its own: its source range is
    its place on the timeline, so an EDL's source and record timecodes agree (and so do its markers'), and it has
    half a dissolve more on each side (what a dissolve shows of it beyond its cut)."""
    track = otio.schema.Track(name="Photos", kind=otio.schema.TrackKind.Video)
    half = round(plan.photo_crossfade_s / 2 * TIMELINE_RATE) if dissolves else 0
    at, shown_before = 0, 0  # frames: where the last photo ends, how long it is shown
    for photo in plan.photos:
        start, end = _frame(photo.start_s), _frame(photo.end_s)
        if start > at:
            track.append(otio.schema.Gap(source_range=_range(otio, at, start)))
        reference = otio.schema.ExternalReference(
            target_url=_url(Path(photo.name) if served else Path(photo.path), served),
            available_range=_range(otio, max(start - half, 0), end + half))
        clip = otio.schema.Clip(name=photo.name, media_reference=reference, source_range=_range(otio, start, end))
        side = min(half, (end - start) // 2, shown_before // 2) if start == at else 0  # photos that abut
        if side > 0:
            track.append(otio.schema.Transition(
                name="Cross Dissolve", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                in_offset=otio.opentime.RationalTime(side, TIMELINE_RATE),
                out_offset=otio.opentime.RationalTime(side, TIMELINE_RATE)))
        track.append(clip)
        at, shown_before = max(at, end), end - start
    return track


def _music_track(otio, plan: Plan, served: bool, centred_fades: bool):
    """A clip per piece, cross-faded into the one before as the mix does (music_mood.mix): centred on their
    boundary, over the piece's crossfade_s (the plan's when None), shortened on a side whose track has less
    before the incoming stretch or after the outgoing one."""
    track = otio.schema.Track(name="Music", kind=otio.schema.TrackKind.Audio)
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    clips, lengths = zip(*(_piece_clip(otio, plan, piece, served) for piece in pieces)) if pieces else ((), ())
    at = 0
    for k, (piece, clip) in enumerate(zip(pieces, clips)):
        start = _frame(piece.start_s)
        if start > at:
            track.append(otio.schema.Gap(source_range=_range(otio, at, start)))
        elif k > 0:
            fade = _crossfade(otio, plan, piece, clips[k - 1], lengths[k - 1], clip, centred_fades)
            if fade is not None:
                track.append(fade)
        track.append(clip)
        at = start + int(clip.source_range.duration.value)
    return track


def _piece_clip(otio, plan: Plan, piece: Piece, served: bool):
    """The clip of one piece and its track's length in frames (None: unknown). Its in point is shifted by as much
    as its start was rounded to a frame, so the music stays in time with the photos within half a frame, and its
    in and out points are each within a frame of the piece's."""
    start, end = _frame(piece.start_s), _frame(piece.end_s)
    source_in = round(piece.track_start_s * TIMELINE_RATE - (piece.start_s * TIMELINE_RATE - start))
    source_in = max(source_in, 0)
    title = f"{piece.artist} - {piece.title}" if piece.artist else piece.title
    length = None
    if piece.on_server:  # no file or URL opens it without the server's password
        reference = otio.schema.MissingReference(name=piece.title, metadata={"music_mood": {
            "song_id": piece.song_id, "why": "a song of a Subsonic server: no file on this machine"}})
    else:
        path = Path(piece.file_path) if served else (Path(plan.library_root) / piece.file_path).absolute()
        seconds = _track_length_s(Path(plan.library_root) / piece.file_path)
        length = None if seconds is None else max(int(seconds * TIMELINE_RATE), source_in + end - start)
        reference = otio.schema.ExternalReference(
            target_url=_url(path, served), available_range=None if length is None else _range(otio, 0, length))
    clip = otio.schema.Clip(name=title, media_reference=reference, source_range=_range(otio, source_in,
                                                                                         source_in + end - start))
    return clip, length


def _crossfade(otio, plan: Plan, piece: Piece, before, before_length: int | None, clip, centred: bool):
    """The Transition between clip `before` and `clip` (piece's), or None where no frame of fade is left."""
    half = (plan.crossfade_s if piece.crossfade_s is None else piece.crossfade_s) / 2 * TIMELINE_RATE
    after_in = int(clip.source_range.start_time.value)  # the incoming track's audio before its stretch
    before_out = before.source_range.end_time_exclusive().value
    left_after = half if before_length is None else before_length - before_out  # the outgoing track's after it
    into = min(round(half), after_in, int(before.source_range.duration.value) // 2)
    out = min(round(half), int(left_after), int(clip.source_range.duration.value) // 2)
    if centred:
        into = out = min(into, out)
    if into + out <= 0:
        return None
    return otio.schema.Transition(
        name="Cross fade", transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
        in_offset=otio.opentime.RationalTime(into, TIMELINE_RATE),
        out_offset=otio.opentime.RationalTime(out, TIMELINE_RATE),
        metadata={"fcp_xml": {"effect": AUDIO_CROSSFADE_EFFECT}})


def _markers(otio, plan: Plan) -> list:
    """The scene changes, then the downbeats and beats of what plays (a beat that is a downbeat is one marker)."""
    markers = [_marker(otio, f"Scene {scene.index + 1}: {', '.join(scene.mood_words[:3])}".rstrip(": "),
                       scene.start_s, SCENE_COLOR) for scene in plan.scenes]
    for piece in (piece for scene in plan.scenes for piece in scene.pieces):
        downbeats = {_frame(t) for t in piece.downbeats_s}
        markers += [_marker(otio, "Downbeat", t, DOWNBEAT_COLOR) for t in piece.downbeats_s]
        markers += [_marker(otio, "Beat", t, BEAT_COLOR) for t in piece.beats_s if _frame(t) not in downbeats]
    return sorted(markers, key=lambda marker: marker.marked_range.start_time.value)  # stable: a scene's first


def _marker(otio, name: str, at_s: float, color: str):
    return otio.schema.Marker(name=name, color=color, marked_range=otio.opentime.TimeRange(
        otio.opentime.RationalTime(_frame(at_s), TIMELINE_RATE), otio.opentime.RationalTime(0, TIMELINE_RATE)))


def _markers_onto_photos(timeline) -> None:
    """An EDL has no markers of its own, only an event's locators (LOC comments): each marker moves onto the
    photo on screen at its time (whose source time is its record time, see _photo_track)."""
    photos = [item for item in timeline.tracks[0] if item.schema_name() == "Clip"]
    for marker in list(timeline.tracks.markers):
        at = marker.marked_range.start_time
        shown = [clip for clip in photos if clip.source_range.contains(at)] or photos[-1:]
        shown[0].markers.append(marker.clone())
    timeline.tracks.markers.clear()


def _frame(seconds: float) -> int:
    return round(seconds * TIMELINE_RATE)


def _range(otio, start: int, end: int):
    return otio.opentime.TimeRange(otio.opentime.RationalTime(start, TIMELINE_RATE),
                                   otio.opentime.RationalTime(end - start, TIMELINE_RATE))


def _url(path: Path, served: bool) -> str:
    """An absolute file URL (RFC 8089, as OpenTimelineIO's target_url expects); served: the path, relative."""
    return quote(path.as_posix()) if served else path.absolute().as_uri()


def _track_length_s(path: Path) -> float | None:
    """A track's length from its file's header (no decoding); None when the file does not say or cannot be
    opened (the mix, written with the timeline, reports a track it cannot read)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.audio[0]
            return float(stream.duration * stream.time_base) if stream.duration else None
    except (OSError, IndexError, av.error.FFmpegError):
        return None


def _opentimelineio():
    """OpenTimelineIO, imported when a timeline is written (0.03 s; its adapters load when used)."""
    try:
        import opentimelineio
    except ImportError as e:
        raise TimelineError("writing a timeline needs OpenTimelineIO: pip install opentimelineio "
                            "otio-fcp-adapter otio-cmx3600-adapter") from e
    return opentimelineio
