"""Editors' timelines of a soundtrack plan (music_mood.timeline, through render.write_outputs): plans made by hand over
copies of real tracks and real photos, written as .otio, .xml (Final Cut Pro 7) and .edl (CMX 3600), and read back
with OpenTimelineIO's own adapters."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import av
import opentimelineio as otio
import pytest

import recommend as recommend_cli
from music_mood.render import write_outputs
from music_mood.soundtrack import Plan
from music_mood.timeline import TIMELINE_RATE, TimelineError, plan_timeline, with_mixed_audio, write_timeline
from tests.plan_factory import hand_made_plan
from tests.test_render import TRACKS, with_tracks

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")
FRAME = 1 / TIMELINE_RATE
KINDS = (".otio", ".xml", ".edl")


@pytest.fixture
def library(isolated_library, sample_tracks) -> Path:
    """The test's library folder with copies of the render tests' three TRACKS in processed_music/."""
    return with_tracks(isolated_library, sample_tracks)


def beat_plan(library: Path, photos: dict[str, Path]):
    """Six photos of 1.7 s (not whole frames at 25 fps: 42.5 frames) in three scenes; the second track starts
    0.3 s into its file (its side of the cross-fade is that short), the third piece has a cross-fade of its own,
    and the second piece has the beats and downbeats that beat sync gives it."""
    plan = hand_made_plan(library, [f"processed_music/{t}" for t in TRACKS], [photos[name] for name in PHOTOS],
                          1.7, 2, track_start_s=[5.0, 0.3, 12.13])
    second = plan.scenes[1].pieces[0]
    second.beats_s = [3.4 + 0.5 * i for i in range(7)]
    second.downbeats_s = [3.4, 5.4]
    plan.scenes[2].pieces[0].crossfade_s = 1.0
    return plan


def read(path: Path):
    return otio.adapters.read_from_file(str(path), **({"rate": TIMELINE_RATE} if path.suffix == ".edl" else {}))


def seconds(time) -> float:
    return time.to_seconds()


def clips(track) -> list:
    return [item for item in track if isinstance(item, otio.schema.Clip)]


def file_path(clip) -> Path:
    return Path(unquote(urlsplit(clip.media_reference.target_url).path))


@pytest.mark.parametrize("suffix", KINDS)
def test_a_timeline_read_back_has_the_photos_the_stretches_and_the_markers_of_the_plan(library, photos, tmp_path,
                                                                                        suffix):
    plan = beat_plan(library, photos)
    out = tmp_path / f"trip{suffix}"
    write_outputs(plan, [out], progress=False)
    timeline = read(out)

    # The photos: one clip each, in order, at their time and for their length, to a frame; their files by path.
    video = [track for track in timeline.tracks if track.kind == otio.schema.TrackKind.Video]
    assert len(video) == 1
    shown = clips(video[0])
    assert [clip.name for clip in shown] == list(PHOTOS)
    for clip, photo in zip(shown, plan.photos):
        placed = clip.range_in_parent()
        assert seconds(placed.start_time) == pytest.approx(photo.start_s, abs=FRAME)
        assert seconds(placed.end_time_exclusive()) == pytest.approx(photo.end_s, abs=FRAME)
        assert file_path(clip) == Path(photo.path).absolute() and file_path(clip).is_file()
    # Cross-dissolves centred on each change, as in the MP4 (an EDL's dissolve events would move the cuts: cuts).
    dissolves = [item for item in video[0] if isinstance(item, otio.schema.Transition)]
    half = plan.photo_crossfade_s / 2
    assert [seconds(t) for d in dissolves for t in (d.in_offset, d.out_offset)] == \
        ([] if suffix == ".edl" else pytest.approx([half] * 2 * (len(PHOTOS) - 1), abs=FRAME))

    markers = timeline.tracks.markers if suffix != ".edl" else [m for clip in shown for m in clip.markers]
    scenes = [m for m in markers if m.name.lower().startswith("scene")]
    assert [seconds(m.marked_range.start_time) for m in scenes] == \
        pytest.approx([scene.start_s for scene in plan.scenes], abs=FRAME)
    beats = sorted(seconds(m.marked_range.start_time) for m in markers if m.name.lower() in ("beat", "downbeat"))
    assert beats == pytest.approx(plan.scenes[1].pieces[0].beats_s, abs=FRAME)
    downbeats = [seconds(m.marked_range.start_time) for m in markers if m.name.lower() == "downbeat"]
    assert downbeats == pytest.approx(plan.scenes[1].pieces[0].downbeats_s, abs=FRAME)

    # The mixed soundtrack beside it, as long as the plan.
    with av.open(str(out.with_suffix(".wav"))) as mixed:
        assert mixed.duration / 1e6 == pytest.approx(plan.total_s, abs=0.01)
    if suffix == ".edl":  # one list of events: the adapter writes the photos' track alone
        assert [track.kind for track in timeline.tracks] == [otio.schema.TrackKind.Video]
        return

    music, mix = [track for track in timeline.tracks if track.kind == otio.schema.TrackKind.Audio]
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    assert len(clips(music)) == len(pieces)
    for clip, piece in zip(clips(music), pieces):
        assert file_path(clip) == (library / piece.file_path).absolute()
        assert seconds(clip.source_range.start_time) == pytest.approx(piece.track_start_s, abs=FRAME)
        assert seconds(clip.source_range.end_time_exclusive()) == pytest.approx(piece.track_end_s, abs=FRAME)
        placed = clip.range_in_parent()
        assert seconds(placed.start_time) == pytest.approx(piece.start_s, abs=FRAME)
        assert seconds(placed.end_time_exclusive()) == pytest.approx(piece.end_s, abs=FRAME)
    fades = [item for item in music if isinstance(item, otio.schema.Transition)]
    # Centred on the boundary, as the mix: the second track has only 0.3 s before its stretch, the third piece
    # fades over its own 1.0 s; Final Cut Pro 7 XML has a fade's cut at its middle, so both sides are as short.
    expected = [0.3, 0.75, 0.5, 0.5] if suffix == ".otio" else [0.3, 0.3, 0.5, 0.5]
    assert [seconds(t) for f in fades for t in (f.in_offset, f.out_offset)] == pytest.approx(expected, abs=FRAME)
    assert [file_path(c) for c in clips(mix)] == [out.with_suffix(".wav").absolute()]
    assert seconds(mix.duration()) == pytest.approx(plan.total_s, abs=FRAME)


def test_the_edl_lists_each_photo_by_its_absolute_path(library, photos, tmp_path):
    plan = beat_plan(library, photos)
    write_outputs(plan, [tmp_path / "trip.edl"], progress=False)
    text = (tmp_path / "trip.edl").read_text()
    assert text.startswith("TITLE: trip\n")
    assert [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("* FROM CLIP: ")] == \
        [Path(photo.path).absolute().as_uri() for photo in plan.photos]


def test_one_wav_serves_several_timelines_and_a_named_wav_is_not_written_twice(tmp_path):
    outs = [tmp_path / "trip.otio", tmp_path / "trip.xml", tmp_path / "trip.mp4", tmp_path / "other.edl",
            tmp_path / "other.wav"]
    assert with_mixed_audio(outs) == [*outs, tmp_path / "trip.wav"]


def test_a_served_timeline_names_files_relatively_and_a_server_song_by_its_title(library, photos, tmp_path):
    plan = beat_plan(library, photos)
    song = plan.scenes[2].pieces[0]
    song.song_id, song.source, song.title = "s-42", "https://music.example.org", "Night Drive"
    timeline = plan_timeline(plan, "timeline.wav", served=True)
    photos_track, music, mix = timeline.tracks
    assert [clip.media_reference.target_url for clip in clips(photos_track)] == list(PHOTOS)
    first, second, third = clips(music)
    assert [first.media_reference.target_url, second.media_reference.target_url] == \
        [f"processed_music/{TRACKS[0]}", f"processed_music/{TRACKS[1]}"]
    assert isinstance(third.media_reference, otio.schema.MissingReference)
    assert third.media_reference.name == "Night Drive" and "music.example.org" not in otio.adapters.write_to_string(
        timeline, "otio_json")
    assert clips(mix)[0].media_reference.target_url == "timeline.wav"
    for suffix in KINDS:  # and each adapter writes it: the song an offline clip
        write_timeline(plan, tmp_path / f"timeline{suffix}", suffix, "timeline.wav", served=True)
        written = read(tmp_path / f"timeline{suffix}")
        assert [clip.name for clip in clips(written.tracks[0])] == list(PHOTOS)
        if suffix == ".xml":
            song_clip = clips(written.tracks[1])[2]
            assert song_clip.name == "Sample Artist - Night Drive"
            assert isinstance(song_clip.media_reference, otio.schema.MissingReference)


def test_without_opentimelineio_a_timeline_is_one_clear_error_and_no_file_is_written(library, photos, tmp_path,
                                                                                      monkeypatch):
    plan = beat_plan(library, photos)
    monkeypatch.setitem(sys.modules, "opentimelineio", None)  # as if it were not installed
    (tmp_path / "out").mkdir()
    with pytest.raises(TimelineError, match="needs OpenTimelineIO: pip install opentimelineio otio-fcp-adapter"):
        write_outputs(plan, [tmp_path / "out" / "trip.m4a", tmp_path / "out" / "trip.xml"], progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # neither the .m4a, nor the .wav beside the timeline


def test_cli_writes_a_timeline_with_the_mix_beside_it_and_refuses_one_in_the_library(library_copy, checkpoints,
                                                                                     photos, tmp_path, call_cli):
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    model_args = ("--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"])
    out = tmp_path / "out"
    out.mkdir()
    done = call_cli(recommend_cli.main, *album, "--soundtrack", "--seconds-per-photo", "2", "--json",
                    "--out", out / "trip.xml", *model_args)
    assert done.returncode == 0, done.stderr
    plan = Plan.from_dict(json.loads(done.stdout))
    assert sorted(p.name for p in out.iterdir()) == ["trip.wav", "trip.xml"]
    photos_track, music, mix = read(out / "trip.xml").tracks
    assert [file_path(clip) for clip in clips(photos_track)] == [Path(p).absolute() for p in album]
    assert [file_path(clip) for clip in clips(music)] == \
        [(library_copy / piece.file_path).absolute() for scene in plan.scenes for piece in scene.pieces]
    assert seconds(mix.duration()) == pytest.approx(plan.total_s, abs=FRAME) == 6.0

    # A timeline in the library's music folder (and the .wav beside it) is refused before any model loads: nothing
    # is written, not even the timeline asked for elsewhere.
    inside = library_copy / "processed_music" / "trip.otio"
    done = call_cli(recommend_cli.main, *album, "--soundtrack", "--out", out / "x.otio", "--out", inside,
                    *model_args)
    assert done.returncode == 1 and done.stderr.startswith(f"Error: cannot write {inside}:")
    assert not inside.exists() and not inside.with_suffix(".wav").exists()
    assert sorted(p.name for p in out.iterdir()) == ["trip.wav", "trip.xml"]
