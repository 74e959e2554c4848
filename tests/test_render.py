"""Rendering a soundtrack plan (music_mood.render): plans made by hand over copies of real tracks and real photos,
no models. The mix, the MP4 (read back with PyAV), the playlist, the JSON, and writing all or nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from music_mood import mix, render
from music_mood.audio import decode_audio, decode_stretches
from music_mood.render import RenderCancelled, RenderError, fit_photo, mix_soundtrack, write_outputs
from music_mood.soundtrack import Plan
from tests.plan_factory import hand_made_plan

SR = 44100
SMALL = (320, 180)  # where the frame size does not matter
# Music from their first second on (no silent intro), and bright enough that a join would show: a hard cut between
# the stretches test_joins_are_continuous_and_nothing_is_silent plays jumps more than its bound at both joins.
TRACKS = ("nostalgic/nostalgic_acoustic_1.opus", "happy/happy_acoustic_s411.opus",
          "energetic/energetic_electronic_2.opus")


def with_tracks(folder: Path, sample_tracks) -> Path:
    """`folder`, a library folder, with copies of the three TRACKS in processed_music/ (no database: a hand-made
    plan names them)."""
    by_name = {f"{t.parent.name}/{t.name}": t for t in sample_tracks}
    for name in TRACKS:
        target = folder / "processed_music" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(by_name[name], target)
    return folder


@pytest.fixture
def library(isolated_library, sample_tracks) -> Path:
    """The test's library folder with copies of the three TRACKS in processed_music/."""
    return with_tracks(isolated_library, sample_tracks)


def tracks(*indices: int) -> list[str]:
    return [f"processed_music/{TRACKS[i]}" for i in indices]


def block_rms(x: np.ndarray, seconds: float = 0.05) -> np.ndarray:
    size = round(seconds * SR)
    blocks = x[:len(x) // size * size].reshape(-1, size, x.shape[1])
    return np.sqrt(np.mean(blocks ** 2, axis=(1, 2)))


def jumps(x: np.ndarray) -> np.ndarray:
    """The largest sample-to-sample change of either channel, per sample."""
    return np.abs(np.diff(x, axis=0)).max(axis=1)


def frame_at(path: Path, t: float) -> np.ndarray:
    """The picture on screen at `t` seconds (the last frame starting at or before it), RGB uint8."""
    shown = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time > t + 1e-6:
                break
            shown = frame.to_ndarray(format="rgb24")
    return shown


# ---------------------------------------------------------------------------------------------------- audio

def test_a_stretch_decodes_to_the_same_samples_as_the_whole_file(sample_tracks):
    track = sample_tracks[0]
    whole = decode_audio(track, SR)
    early, middle, past_the_end = decode_stretches(track, [(-1.0, 0.5), (12.0, 14.5), (30.0, 99.0)], SR)
    assert early.shape == (round(0.5 * SR), 2) and middle.shape == (round(2.5 * SR), 2)
    assert early.dtype == np.float32
    # decode_audio averages the channels; a stretch reached by a seek is sample-exact, not merely close
    np.testing.assert_allclose(early.mean(axis=1), whole[:len(early)], atol=1e-5)
    np.testing.assert_allclose(middle.mean(axis=1), whole[12 * SR:12 * SR + len(middle)], atol=1e-5)
    assert len(past_the_end) == len(whole) - 30 * SR  # only what the file has


def test_joins_are_continuous_and_nothing_is_silent(library):
    # three scenes of 3 s; the second track starts 0.3 s into its file, so its side of the cross-fade is shortened
    plan = hand_made_plan(library, tracks(0, 1, 2), ["unused.png"] * 6, 1.5, 2, track_start_s=[5.0, 0.3, 5.0])
    mix = mix_soundtrack(plan, SR)
    assert mix.shape == (round(plan.total_s * SR), 2) and mix.dtype == np.float32
    assert np.abs(mix).max() <= 1.0

    # No click: within 2 ms of each join, and of each edge of its cross-fade, the largest jump is no larger than
    # in 95 % of the 4 ms windows inside the pieces (a few times the median window's: 0.13 against 0.04 here).
    window = round(0.002 * SR)
    inside = np.concatenate([jumps(mix[round(a * SR):round(b * SR)]) for a, b in ((0.6, 2.2), (3.8, 5.2), (6.8, 8.4))])
    bound = np.percentile(inside[:len(inside) // (2 * window) * 2 * window].reshape(-1, 2 * window).max(axis=1), 95)
    d = jumps(mix)
    for join in (3.0, 6.0):
        for at in (join - plan.crossfade_s / 2, join - 0.3, join, join + plan.crossfade_s / 2):
            assert d[round(at * SR) - window:round(at * SR) + window].max() <= bound, (join, at)
    # ...and the bound would catch one: the same stretches cut together without a fade jump more at each join.
    root = Path(plan.library_root)
    pieces = [p for scene in plan.scenes for p in scene.pieces]
    hard = np.concatenate([decode_stretches(root / p.file_path, [(p.track_start_s, p.track_end_s)], SR)[0]
                           for p in pieces])
    assert all(jumps(hard)[round(join * SR) - 2:round(join * SR) + 2].max() > bound for join in (3.0, 6.0))

    # No silence and no dip: every 50 ms block is music, except the first 0.1 s (the fade in starts at 0) and the
    # final fade (within 26 dB of the music's median level: the mix's level is its loudness target's, -14 LUFS);
    # the cross-fades hold the level of what is either side.
    rms = block_rms(mix)
    fade_blocks = round(plan.fade_s / 0.05)
    assert rms[2:-fade_blocks].min() > 0.05 * np.median(rms)
    for join in (3.0, 6.0):
        around = np.r_[rms[round((join - 1.25) / 0.05):round((join - 0.75) / 0.05)],
                       rms[round((join + 0.75) / 0.05):round((join + 1.25) / 0.05)]]
        assert rms[round((join - 0.75) / 0.05):round((join + 0.75) / 0.05)].min() > 0.3 * np.median(around)
    # The final fade ends the soundtrack: silent on its last sample, falling all along.
    assert np.all(mix[-1] == 0)
    assert np.all(np.diff(block_rms(mix[-round(plan.fade_s * SR):], 0.1)) < 0)


def test_a_quiet_track_after_a_loud_one_is_brought_to_the_same_level(library):
    import soundfile

    quiet = library / "processed_music" / "quiet.wav"  # the second track at -16 dB: the same music, much quieter
    audio = decode_audio(library / tracks(1)[0], SR)
    soundfile.write(quiet, np.stack([audio, audio], axis=1) * 0.16, SR)
    plan = hand_made_plan(library, [tracks(0)[0], "processed_music/quiet.wav"], ["unused.png"] * 4, 2.0, 2)
    mix = mix_soundtrack(plan, SR)
    loud_part, quiet_part = mix[round(0.6 * SR):round(3.0 * SR)], mix[round(5.0 * SR):round(7.4 * SR)]
    level = lambda x: 20 * np.log10(np.sqrt(np.mean(x ** 2)))
    assert abs(level(loud_part) - level(quiet_part)) < 3.0  # 17 dB apart in their files


def test_each_track_is_opened_once_even_when_it_plays_twice(library, monkeypatch):
    calls = []

    def counting(path, stretches, sample_rate, *args):
        calls.append((Path(path).name, len(stretches)))
        return decode_stretches(path, stretches, sample_rate, *args)

    monkeypatch.setattr(mix, "decode_stretches", counting)
    plan = hand_made_plan(library, tracks(0, 1, 0), ["unused.png"] * 3, 2.0, 1, track_start_s=[3.0, 5.0, 12.0])
    mix_soundtrack(plan, SR)
    assert sorted(calls) == sorted([(Path(TRACKS[0]).name, 2), (Path(TRACKS[1]).name, 1)])


def test_pieces_shorter_than_half_a_cross_fade_still_mix(library):
    plan = hand_made_plan(library, tracks(0, 1, 2), ["unused.png"] * 3, 0.6, 1, crossfade_s=1.5)
    mix = mix_soundtrack(plan, SR)
    assert mix.shape == (round(1.8 * SR), 2) and np.abs(mix).max() <= 1.0
    rms = block_rms(mix)
    assert rms[2:-10].min() > 0.05 * np.median(rms)


def test_a_plan_that_contradicts_itself_is_refused(library):
    plan = hand_made_plan(library, tracks(0, 1), ["unused.png"] * 2, 2.0, 1)
    piece = plan.scenes[1].pieces[0]
    piece.start_s, piece.track_start_s = piece.start_s + 0.5, piece.track_start_s + 0.5  # a gap before it
    with pytest.raises(RenderError, match="does not start where"):
        mix_soundtrack(plan, SR)


# ---------------------------------------------------------------------------------------------------- video

def test_the_mp4_has_one_h264_and_one_aac_stream_of_the_plan_length(library, photos, tmp_path):
    shown = [photos[name] for name in ("astronaut.png", "coffee.png", "rocket.jpg", "chelsea.png")]
    plan = hand_made_plan(library, tracks(0, 1), shown, 1.2, 2)
    out = tmp_path / "slideshow.mp4"
    write_outputs(plan, [out], progress=False)  # the default size, 1280×720
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.codec_context.width, video.codec_context.height) == (1280, 720)
        assert abs(container.duration / 1e6 - plan.total_s) <= 0.1
        assert abs(float(video.duration * video.time_base) - plan.total_s) <= 0.1
        assert abs(float(audio.duration * audio.time_base) - plan.total_s) <= 0.1
        frames = list(container.decode(video=0))
    assert frames[0].format.name == "yuv420p"
    # The stills are held, not encoded every frame (a still photo gets one frame a second, HOLD_S).
    assert len(frames) < plan.total_s * render.FPS


def test_a_photo_with_exif_rotation_comes_out_upright(library, tmp_path):
    upright = np.zeros((240, 320, 3), np.uint8)
    upright[:120] = (220, 30, 30)  # red on top
    upright[120:] = (30, 30, 220)  # blue below
    # Stored turned a quarter to the left, with EXIF orientation 6 ("rotate 90° clockwise to view").
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "rotated.jpg"
    stored.save(photo, exif=exif.tobytes(), quality=95)

    plan = hand_made_plan(library, tracks(0), [photo, photo], 1.0, 2)
    out = tmp_path / "rotated.mp4"
    write_outputs(plan, [out], progress=False, size=SMALL)
    picture = frame_at(out, 0.5).astype(int)
    top, bottom = picture[20:70, 120:200].mean(axis=(0, 1)), picture[110:160, 120:200].mean(axis=(0, 1))
    assert top[0] > 150 and top[2] < 90, top  # red
    assert bottom[2] > 150 and bottom[0] < 90, bottom  # blue
    assert picture[:, :20].max() < 30  # 4:3 in 16:9: black bars left and right, none needed above


def test_a_portrait_photo_is_letterboxed_without_distortion(library, photos, tmp_path):
    portrait = tmp_path / "portrait.png"
    Image.open(photos["astronaut.png"]).convert("RGB").crop((100, 0, 300, 400)).save(portrait)  # 200×400, 1:2

    fitted = fit_photo(Image.open(portrait), SMALL)
    columns = np.flatnonzero(fitted.max(axis=(0, 2)) > 0)
    assert fitted.shape == (180, 320, 3)
    assert (columns[0], columns[-1] + 1) == (115, 205)  # 90×180: the photo's 1:2, centred
    assert fitted[:, :115].max() == 0 and fitted[:, 205:].max() == 0

    plan = hand_made_plan(library, tracks(0), [portrait, portrait], 1.0, 2)
    out = tmp_path / "portrait.mp4"
    write_outputs(plan, [out], progress=False, size=SMALL)
    picture = frame_at(out, 0.5).astype(int)
    lit = np.flatnonzero(picture.max(axis=(0, 2)) > 40)
    assert abs(lit[0] - 115) <= 3 and abs(lit[-1] + 1 - 205) <= 3
    assert picture[:, :110].max() < 30 and picture[:, 210:].max() < 30
    assert np.abs(picture[:, 120:200] - fitted[:, 120:200].astype(int)).mean() < 12  # the photo itself, unstretched


def test_in_the_middle_of_a_photo_cross_fade_the_frame_blends_both(library, photos, tmp_path):
    first, second = photos["astronaut.png"], photos["coffee.png"]
    plan = hand_made_plan(library, tracks(0), [first, second], 1.0, 2)  # the photos meet at 1.0 s
    out = tmp_path / "blend.mp4"
    write_outputs(plan, [out], progress=False, size=SMALL)
    a, b = (fit_photo(Image.open(p).convert("RGB"), SMALL).astype(float) for p in (first, second))
    middle = frame_at(out, 1.0).astype(float)
    error = lambda x, y: np.abs(x - y).mean()
    assert error(middle, (a + b) / 2) < 8
    assert error(middle, a) > 3 * error(middle, (a + b) / 2) and error(middle, b) > 3 * error(middle, (a + b) / 2)
    # outside the cross-fade each photo is shown alone
    assert error(frame_at(out, 0.5).astype(float), a) < 8 and error(frame_at(out, 1.5).astype(float), b) < 8


# ---------------------------------------------------------------------------------------------------- small files

def test_the_playlist_names_each_piece_with_its_start_and_stop(library, tmp_path):
    plan = hand_made_plan(library, tracks(0, 1), ["unused.png"] * 2, 2.5, 1, track_start_s=[5.0, 0.25])
    plan.scenes[1].pieces[0].artist = ""
    out = tmp_path / "soundtrack.m3u8"
    write_outputs(plan, [out], progress=False)
    assert out.read_text(encoding="utf-8").splitlines() == [
        "#EXTM3U",
        "#EXTINF:2,Sample Artist - nostalgic acoustic 1",
        "#EXTVLCOPT:start-time=5.000",
        "#EXTVLCOPT:stop-time=7.500",
        str(library / "processed_music" / TRACKS[0]),
        "#EXTINF:2,happy acoustic s411",
        "#EXTVLCOPT:start-time=0.250",
        "#EXTVLCOPT:stop-time=2.750",
        str(library / "processed_music" / TRACKS[1]),
    ]


def test_the_json_reads_back_as_the_same_plan(library, tmp_path):
    plan = hand_made_plan(library, tracks(0, 1), ["été.png", "b.png"], 2.0, 1, text="mariage, joyeux")
    out = tmp_path / "plan.json"
    write_outputs(plan, [out], progress=False)
    assert Plan.from_dict(json.loads(out.read_text(encoding="utf-8"))) == plan


def test_audio_files_and_progress(library, tmp_path, capsys):
    plan = hand_made_plan(library, tracks(0), ["unused.png"] * 2, 1.0, 2)
    seen = []
    outs = [tmp_path / "a.m4a", tmp_path / "a.wav"]
    write_outputs(plan, outs, on_progress=lambda fraction, text: seen.append((fraction, text)))
    for out in outs:
        with av.open(str(out)) as container:
            assert abs(container.duration / 1e6 - plan.total_s) <= 0.05
            assert container.streams.audio[0].codec_context.name == ("aac" if out.suffix == ".m4a" else "pcm_s16le")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"Mixing audio", "Encoding audio"} <= {text for _, text in seen}
    assert capsys.readouterr().out == ""  # progress goes to stderr (tqdm, shown on a terminal), never to stdout


# ---------------------------------------------------------------------------------------------------- all or nothing

@pytest.fixture
def existing(tmp_path) -> dict[Path, bytes]:
    """Outputs from an earlier run, which a failed or cancelled one must leave as they are."""
    files = {tmp_path / "out" / "trip.mp4": b"an earlier video", tmp_path / "out" / "trip.json": b"{}"}
    for path, content in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    return files


def assert_untouched(existing: dict[Path, bytes]) -> None:
    folder = next(iter(existing)).parent
    assert sorted(folder.iterdir()) == sorted(existing)  # no temporary file left behind
    assert all(path.read_bytes() == content for path, content in existing.items())


def test_a_cancel_midway_leaves_the_earlier_outputs_and_no_temporary_file(library, photos, existing):
    plan = hand_made_plan(library, tracks(0), [photos["astronaut.png"], photos["coffee.png"]], 1.0, 2)
    asked = []
    stop_during_video = lambda: asked.append(1) or len(asked) > 8  # after mixing, a few frames into the video
    outs = [*existing, next(iter(existing)).with_name("trip.m4a")]  # two to replace, one new
    with pytest.raises(RenderCancelled):
        write_outputs(plan, outs, progress=False, should_stop=stop_during_video, size=SMALL)
    assert len(asked) > 8
    assert_untouched(existing)


def test_ctrl_c_midway_leaves_the_earlier_outputs_and_no_temporary_file(library, photos, existing):
    plan = hand_made_plan(library, tracks(0), [photos["astronaut.png"], photos["coffee.png"]], 1.0, 2)

    def interrupt(fraction, text):
        if text == "Rendering video" and fraction > 0.3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_outputs(plan, list(existing), progress=False, on_progress=interrupt, size=SMALL)
    assert_untouched(existing)


def test_a_missing_track_fails_naming_it_and_leaves_the_earlier_outputs(library, photos, existing):
    plan = hand_made_plan(library, tracks(0, 1), [photos["astronaut.png"], photos["coffee.png"]], 1.0, 1)
    (library / tracks(1)[0]).unlink()
    with pytest.raises(RenderError, match=Path(TRACKS[1]).name):
        write_outputs(plan, list(existing), progress=False, size=SMALL)
    assert_untouched(existing)


def test_an_unknown_extension_is_refused_before_anything_is_written(library, existing):
    plan = hand_made_plan(library, tracks(0), ["missing.png"], 1.0, 1)
    (library / tracks(0)[0]).unlink()  # any work at all would fail differently
    outs = [*existing, next(iter(existing)).with_name("trip.avi")]
    with pytest.raises(ValueError, match=r"trip\.avi.*\.mp4, \.m4a, \.wav, \.m3u8, \.m3u, \.json") as error:
        write_outputs(plan, outs, progress=False)
    assert "\n" not in str(error.value)
    assert_untouched(existing)


def test_an_unwritable_place_is_an_os_error_naming_it(library, tmp_path, existing):
    plan = hand_made_plan(library, tracks(0), ["unused.png"], 1.0, 1)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    # (The tests run as root, whom a folder's permissions do not stop: a missing folder and a file where a folder
    # should be are what fails for root too.)
    for out in (tmp_path / "no-such-folder" / "trip.mp4", not_a_folder / "trip.json"):
        with pytest.raises(OSError, match=str(out)):
            write_outputs(plan, [next(iter(existing)).with_name("trip.m3u8"), out], progress=False)
        assert_untouched(existing)  # the other output, in a good folder, was not written either


def test_rendering_never_writes_into_the_library(library, existing):
    import soundfile

    track = library / "processed_music" / "track.wav"
    soundfile.write(track, decode_audio(library / tracks(0)[0], SR)[:3 * SR], SR)
    plan = hand_made_plan(library, ["processed_music/track.wav"], ["unused.png"], 1.0, 1, track_start_s=1.0)
    before = {p: p.read_bytes() for p in library.rglob("*") if p.is_file()}
    for out in (track, library / "new_music" / "soundtrack.m4a"):
        with pytest.raises(ValueError, match="music library"):
            write_outputs(plan, [out], progress=False)
    assert {p: p.read_bytes() for p in library.rglob("*") if p.is_file()} == before


def test_a_camera_jpeg_is_opened_small_but_never_smaller_than_shown(tmp_path):
    from music_mood.images import open_image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    photo = tmp_path / "camera.jpg"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(photo, exif=exif.tobytes())
    opened = open_image(photo, fit_box=SMALL)
    assert opened.size == (375, 500)  # decoded at 1/8, then turned upright
    assert opened.height >= 180  # fitted into 320×180 it is shown 135×180
    assert open_image(photo).size == (3000, 4000)
