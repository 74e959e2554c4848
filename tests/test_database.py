"""The music database: whole-track deterministic vectors, incremental adds, nothing lost, and a checked contract."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import music_to_vector as mtv
from music_mood import build, library
from music_mood.audio import AudioError, decode_audio, file_sha256
from music_mood.build import build_library
from music_mood.database import DatabaseError
from music_mood.embed import embed_track, embed_windows, split_windows
from music_mood.engines import ModelChoice
from music_mood.library import LibraryPaths, load_database
from music_mood.storage import LibraryBusyError, write_atomically
from music_mood.torch_runtime import log_mel_features
from tests.conftest import put_in_new_music, run_cli


def _snapshot(paths: LibraryPaths) -> dict:
    return {p.name: p.read_bytes() for p in (paths.vectors, paths.metadata, paths.segments)}


# ---------------------------------------------------------------------------------------------- windows


def test_windows_cover_the_whole_track_and_the_last_ends_at_its_end():
    """No zero padding: the last window overlaps the one before it, and weighs only the audio it adds."""
    audio = np.arange(25, dtype=np.float32) + 1
    windows, share = split_windows(audio, 10)[:2]
    np.testing.assert_array_equal(windows, [audio[0:10], audio[10:20], audio[15:25]])
    np.testing.assert_allclose(share, [1, 1, 0.5])
    np.testing.assert_array_equal(split_windows(audio, 10)[2], [0, 10, 15])


def test_last_window_of_a_real_track_is_its_final_window_of_music(sample_tracks):
    for track in (sample_tracks[2], sample_tracks[16]):  # 29.6 s and 32.65 s: three and four windows
        audio = decode_audio(track, 48_000)
        windows, share = split_windows(audio, 480_000)[:2]
        assert len(windows) == math.ceil(len(audio) / 480_000)
        np.testing.assert_array_equal(windows[-1], audio[-480_000:])
        for j, window in enumerate(windows[:-1]):
            np.testing.assert_array_equal(window, audio[j * 480_000:(j + 1) * 480_000])
        assert share.sum() * 480_000 == pytest.approx(len(audio))  # every sample counted once
        assert split_windows(audio, 480_000)[2][-1] == len(audio) - 480_000


def test_short_track_is_repeat_padded():
    windows, share, starts = split_windows(np.array([1, 2, 3], np.float32), 10)
    np.testing.assert_array_equal(windows, [[1, 2, 3, 1, 2, 3, 1, 2, 3, 1]])
    np.testing.assert_array_equal(share, [1])
    np.testing.assert_array_equal(starts, [0])


def test_exact_multiple_has_no_extra_window():
    windows, share, starts = split_windows(np.ones(20, np.float32), 10)
    assert windows.shape == (2, 10) and list(share) == [1, 1] and list(starts) == [0, 10]


def test_zero_length_audio_is_an_error_not_a_crash():
    with pytest.raises(AudioError):
        split_windows(np.zeros(0, np.float32), 10)


# ---------------------------------------------------------------------------------------------- vectors


def test_same_file_gives_identical_vector_across_runs(clap_audio, sample_tracks, tmp_path):
    """Two separate builds of the same real track: byte-identical vectors (no random crop anywhere)."""
    rows = []
    for run in ("first", "second"):
        paths = LibraryPaths.at(tmp_path / run)
        put_in_new_music(paths.root, sample_tracks[:1])
        build_library(clap_audio, paths, progress=False)
        rows.append((np.load(paths.vectors), np.load(paths.segments)))
    np.testing.assert_array_equal(rows[0][0], rows[1][0])
    np.testing.assert_array_equal(rows[0][1], rows[1][1])


def _encode(source: np.ndarray, rate: int, path, codec: str, layout: str = "mono"):
    """Write float32 audio (channels, samples) to `path` with PyAV, as another program would have."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(source, np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def test_decoding_averages_the_channels_and_resamples_with_soxr(sample_tracks, tmp_path):
    """A stereo 44.1 kHz wav of real music: the decoded audio is exactly the mean of its channels, resampled."""
    import librosa

    music = decode_audio(sample_tracks[3], 44_100)[: 44_100 * 4]
    stereo = np.stack([music, 0.5 * music[::-1]])
    soundfile.write(tmp_path / "stereo.wav", stereo.T, 44_100, subtype="FLOAT")
    expected = librosa.resample(stereo.mean(axis=0), orig_sr=44_100, target_sr=48_000, res_type="soxr_hq")
    np.testing.assert_allclose(decode_audio(tmp_path / "stereo.wav", 48_000), expected, atol=1e-6)


def test_m4a_is_decoded_without_a_system_ffmpeg(sample_tracks, tmp_path, monkeypatch):
    """AAC in an .m4a (what a Mac or an iTunes library holds) decodes in process: no ffmpeg on PATH needed."""
    music = decode_audio(sample_tracks[3], 48_000)
    _encode(music[None], 48_000, tmp_path / "track.m4a", "aac")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no other program
    decoded = decode_audio(tmp_path / "track.m4a", 48_000)
    assert abs(len(decoded) - len(music)) < 48_000 * 0.1  # within 0.1 s (encoder padding)
    second = music[48_000 * 5:48_000 * 6]  # the same music through a lossy codec, after the encoder's priming
    lag = max(range(0, 4096), key=lambda shift: float(second @ decoded[48_000 * 5 + shift:48_000 * 6 + shift]))
    assert np.corrcoef(second, decoded[48_000 * 5 + lag:48_000 * 6 + lag])[0, 1] > 0.95


def test_track_vector_is_weighted_mean_of_its_windows(clap_audio, sample_tracks):
    audio = decode_audio(sample_tracks[0], 48_000)
    vector, segments, last_start_s = embed_track(clap_audio, audio)
    assert len(segments) == int(np.ceil(len(audio) / 480_000))  # whole track, 10 s windows
    assert last_start_s == (len(audio) - 480_000) / 48_000
    np.testing.assert_allclose(segments[-1], embed_windows(clap_audio, audio[None, -480_000:])[0], atol=1e-6)
    share = np.minimum(1, (len(audio) - np.arange(len(segments)) * 480_000) / 480_000)  # the new audio in each
    mean = (segments * share[:, None]).sum(0)
    np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-6)


def test_log_mel_features_are_the_extractors(clap_audio, sample_tracks):
    """The torch log-mel of real windows (a full one, the zero-padded last one) is the extractor's input_features."""
    extractor = clap_audio.processor.feature_extractor
    audio = decode_audio(sample_tracks[21], extractor.sampling_rate)
    windows = split_windows(audio, extractor.nb_max_samples)[0][[0, -1]]
    expected = extractor(list(windows), sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
    # The extractor's STFT is float64, ours float32, whose rounding is ~1e-7 of a frame's loudest bin: bins 60-80 dB
    # below it differ by up to 2.2e-3 dB on the 28 sample tracks (louder ones by < 1e-4 dB), in values spanning
    # -100..+25 dB. 1e-2 dB leaves a margin and still fails a symmetric Hann window (0.8 dB) or zero padding (35 dB).
    torch.testing.assert_close(log_mel_features(extractor, windows), expected, rtol=0, atol=1e-2)


def test_fused_checkpoint_features_come_from_its_extractor(clap_audio, sample_tracks):
    """A "fusion" extractor stacks four views with other mel filters; those features are left to the extractor."""
    from transformers import ClapFeatureExtractor

    unfused = clap_audio.processor.feature_extractor
    fusion = ClapFeatureExtractor(**{**unfused.to_dict(), "truncation": "fusion"})
    audio = decode_audio(sample_tracks[0], fusion.sampling_rate)
    windows = split_windows(audio, fusion.nb_max_samples)[0][:2]
    features = log_mel_features(fusion, windows)
    assert features.shape[:2] == (2, 4)
    torch.testing.assert_close(features, fusion(list(windows), sampling_rate=fusion.sampling_rate,
                                                return_tensors="pt").input_features, rtol=0, atol=0)


def _clap_with_shifted_windows(checkpoints, folder):
    """The tiny CLAP with two blocks in its first stages, so the second block attends in shifted windows (the
    tiny checkpoint has one block per stage: no mask), and non-zero relative position biases (random init: zero)."""
    from transformers import AutoProcessor, ClapAudioModelWithProjection

    config = ClapAudioModelWithProjection.config_class.from_pretrained(checkpoints["clap"])
    config.depths = [2, 2, 1, 1]
    torch.manual_seed(0)
    model = ClapAudioModelWithProjection(config)
    with torch.no_grad():
        for stage in model.audio_model.audio_encoder.layers:
            for block in stage.blocks:
                block.attention.self.relative_position_bias_table.normal_()
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(checkpoints["clap"]).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("shifted_windows", [False, True])
def test_fused_audio_attention_matches_transformers(checkpoints, clap_audio, sample_tracks, tmp_path,
                                                     shifted_windows):
    """load_clap_audio runs the audio tower's window attention through the fused kernel; the embeddings of real
    windows stay transformers', with and without the shifted-window mask."""
    from transformers import ClapAudioModelWithProjection

    from music_mood.models import load_clap_audio

    name = _clap_with_shifted_windows(checkpoints, tmp_path / "clap") if shifted_windows else checkpoints["clap"]
    fused = load_clap_audio(name, ModelChoice("fp32")) if shifted_windows else clap_audio
    reference = ClapAudioModelWithProjection.from_pretrained(name).eval()
    extractor = fused.processor.feature_extractor
    audio = decode_audio(sample_tracks[0], extractor.sampling_rate)
    features = log_mel_features(extractor, split_windows(audio, extractor.nb_max_samples)[0][:3])
    with torch.inference_mode():
        embeds = fused.model(input_features=features).audio_embeds
        # They differ by ~2e-8 (scores scaled before vs after q @ k, bias and mask added in one pass) in values of
        # 0.03-0.3; dropping the shifted-window mask moves them by ~1e-3.
        torch.testing.assert_close(embeds, reference(input_features=features).audio_embeds, rtol=1e-5, atol=1e-6)
    blocks = [block for stage in fused.model.audio_model.audio_encoder.layers for block in stage.blocks]
    assert any(block.shift_size > 0 for block in blocks) == shifted_windows


def test_built_database_meets_its_contract(built_library, clap_audio):
    paths = LibraryPaths.at(built_library)
    db = load_database(paths, clap_model=clap_audio.name, dim=clap_audio.model.config.projection_dim)
    assert db.vectors.dtype == np.float32 and db.vectors.shape == (len(db.tracks), db.dim)
    np.testing.assert_allclose(np.linalg.norm(db.vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(db.segments, axis=1), 1, atol=1e-5)
    meta = json.loads(paths.metadata.read_text())
    assert meta["clap_model"] == clap_audio.name and meta["embedding"]["dim"] == db.dim
    for track in db.tracks:
        assert {"id", "title", "artist", "mood", "genre", "file_path", "duration_s", "sha256"} <= track.keys()
        assert track["file_path"].startswith("processed_music/")
        assert (built_library / track["file_path"]).is_file()
        assert track["mood"] == track["file_path"].split("/")[1]  # the folder under new_music/
        assert track["genre"] in ("acoustic", "electronic")  # from the file name: the files carry no tags
        assert track["sha256"] == file_sha256(built_library / track["file_path"])
        assert 29 < track["duration_s"] < 34
    assert not any((built_library / "new_music").rglob("*.opus"))


def test_tags_name_the_track(clap_audio, isolated_library, sample_tracks):
    import mutagen.flac

    audio, rate = soundfile.read(sample_tracks[0])
    target = isolated_library / "new_music" / "evening" / "untitled.flac"
    target.parent.mkdir(parents=True)
    soundfile.write(target, audio[: rate * 3], rate)
    tags = mutagen.flac.FLAC(target)
    tags.update({"title": "Dusk Walk", "artist": "The Testers", "genre": "Jazz"})
    tags.save()
    report = build_library(clap_audio, LibraryPaths.at(isolated_library), progress=False)
    (record,) = report.added
    assert (record["title"], record["artist"], record["genre"], record["mood"]) == ("Dusk Walk", "The Testers",
                                                                                    "Jazz", "evening")
    assert record["segment_count"] == 1  # a 3 s file: one repeat-padded window


# ---------------------------------------------------------------------------------------------- incremental


def test_incremental_add_does_not_re_embed(library_copy, clap_audio, sample_tracks, monkeypatch):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    embedded = []
    real = build.embed_track
    monkeypatch.setattr(build, "embed_track", lambda clap, audio: embedded.append(len(audio)) or real(clap, audio))
    new = [t for t in sample_tracks if t.name not in {p.name for p in (library_copy / "processed_music").rglob("*")}]
    put_in_new_music(library_copy, new[:1])
    report = build_library(clap_audio, paths, progress=False)
    after = load_database(paths)
    assert len(embedded) == 1 and len(report.added) == 1 and report.tracks == len(after) == len(before) + 1
    np.testing.assert_array_equal(after.vectors[: len(before)], before.vectors)
    np.testing.assert_array_equal(after.segments[: len(before.segments)], before.segments)
    assert after.tracks[: len(before)] == before.tracks


def test_file_already_in_library_is_not_embedded_again(library_copy, clap_audio, monkeypatch):
    paths = LibraryPaths.at(library_copy)
    before = _snapshot(paths)
    existing = next((library_copy / "processed_music").rglob("*.opus"))
    copy = library_copy / "new_music" / "again" / existing.name
    copy.parent.mkdir(parents=True)
    shutil.copyfile(existing, copy)
    monkeypatch.setattr(build, "embed_track", lambda *a: pytest.fail("re-embedded a known file"))
    report = build_library(clap_audio, paths, progress=False)
    assert report.added == [] and [d[0] for d in report.duplicates] == [copy]
    assert _snapshot(paths) == before and copy.exists()


def test_interrupted_run_finishes_its_moves(library_copy, clap_audio):
    """A run that saved the database but stopped before moving a file: the next run moves it, embeds nothing."""
    paths = LibraryPaths.at(library_copy)
    listed = library_copy / load_database(paths).tracks[0]["file_path"]
    stranded = library_copy / "new_music" / listed.relative_to(library_copy / "processed_music")
    stranded.parent.mkdir(parents=True, exist_ok=True)
    listed.rename(stranded)
    before = _snapshot(paths)
    report = build_library(clap_audio, paths, progress=False)
    assert report.added == [] and report.duplicates == []
    assert listed.is_file() and not stranded.exists()
    assert _snapshot(paths) == before


# ---------------------------------------------------------------------------------------------- failures


def _bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.mp3").write_bytes(b"\xff\xfb" + bytes(range(256)) * 20)
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 48_000)
    (folder / "fake.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    (folder / "zero-bytes.flac").write_bytes(b"")
    return sorted(folder.iterdir())


def test_failing_files_leave_database_and_other_files_intact(library_copy, clap_audio, sample_tracks):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    bad = _bad_files(library_copy / "new_music" / "broken")
    good = put_in_new_music(library_copy, [sample_tracks[1]])
    report = build_library(clap_audio, paths, progress=False)
    assert sorted(p for p, _ in report.failed) == bad
    reasons = dict(report.failed)
    assert "zero length" in reasons[library_copy / "new_music/broken/empty.wav"]
    assert "empty file (0 bytes)" in reasons[library_copy / "new_music/broken/zero-bytes.flac"]
    assert "not an audio file this machine can decode" in reasons[library_copy / "new_music/broken/corrupt.mp3"]
    assert all(p.exists() for p in bad)  # failed files stay where they were
    after = load_database(paths)
    assert [r["file_path"] for r in report.added] == ["processed_music/" + good[0].relative_to(
        library_copy / "new_music").as_posix()]
    assert after.tracks[: len(before)] == before.tracks and len(after) == len(before) + 1
    assert not good[0].exists() and (library_copy / report.added[0]["file_path"]).exists()


def test_cli_names_each_failed_file_and_exits_1(library_copy, checkpoints):
    # A new process on purpose: the one end-to-end run of the script as a user runs it, so the exit code is the one
    # `raise SystemExit(main())` gives the shell, and stdout is empty at the descriptor, decoders' output included.
    _bad_files(library_copy / "new_music" / "broken")
    done = run_cli("music_to_vector.py", "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    for name in ("corrupt.mp3", "empty.wav", "fake.m4a", "zero-bytes.flac"):
        assert any(name in line and line.startswith("Error:") for line in done.stderr.splitlines())
    assert done.stdout == ""  # nothing added, nothing on stdout


def test_error_while_saving_loses_nothing(library_copy, clap_audio, sample_tracks, monkeypatch):
    paths = LibraryPaths.at(library_copy)
    before = _snapshot(paths)
    dropped = put_in_new_music(library_copy, [sample_tracks[2]])

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(library, "write_atomically", disk_full)
    with pytest.raises(OSError):
        build_library(clap_audio, paths, progress=False)
    assert _snapshot(paths) == before and dropped[0].exists()
    assert not list(library_copy.glob(".*.tmp"))


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    (tmp_path / "atomic").mkdir()
    target = tmp_path / "atomic" / "db.json"
    target.write_text("old")

    def half_then_fail(f):
        f.write(b"new but incomp")
        raise OSError("interrupted")

    with pytest.raises(OSError):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old" and list(target.parent.iterdir()) == [target]


def test_lock_keeps_two_builders_apart(library_copy, clap_audio, sample_tracks, checkpoints):
    from filelock import FileLock

    paths = LibraryPaths.at(library_copy)
    put_in_new_music(library_copy, [sample_tracks[3]])
    before = _snapshot(paths)
    with FileLock(paths.lock):
        with pytest.raises(LibraryBusyError, match="another music_to_vector run"):
            build_library(clap_audio, paths, progress=False, lock_timeout=0.2)
    assert _snapshot(paths) == before
    assert len(build_library(clap_audio, paths, progress=False).added) == 1  # free again


# ---------------------------------------------------------------------------------------------- contract


def test_database_of_another_checkpoint_is_refused(library_copy, clap_audio):
    paths = LibraryPaths.at(library_copy)
    with pytest.raises(DatabaseError, match=r"made with CLAP model .* rebuild"):
        load_database(paths, clap_model="laion/some-other-clap")
    with pytest.raises(DatabaseError, match=r"512-d.*rebuild"):
        load_database(paths, dim=512)
    with pytest.raises(DatabaseError, match="made with CLAP model"):
        build_library(dataclasses.replace(clap_audio, name="other"), paths, progress=False)


def test_local_checkpoint_is_the_same_model_however_it_is_written(library_copy, checkpoints, monkeypatch, tmp_path):
    """A database built from a local directory loads when the CLI names that directory relatively or via a link."""
    paths = LibraryPaths.at(library_copy)
    assert load_database(paths).clap_model == checkpoints["clap"]
    folder = Path(checkpoints["clap"])
    monkeypatch.chdir(folder.parent)
    (tmp_path / "link").symlink_to(folder)
    for name in (folder.name, f"./{folder.name}/", str(tmp_path / "link")):
        assert len(load_database(paths, clap_model=name)) == len(load_database(paths))
    with pytest.raises(DatabaseError, match="made with CLAP model"):
        load_database(paths, clap_model=str(tmp_path))  # another folder


@pytest.mark.parametrize("damage", ["truncated vectors", "bad json", "misaligned", "not unit", "float64",
                                    "missing metadata", "missing segments", "wrong version"])
def test_broken_database_is_a_clear_error(library_copy, damage):
    paths = LibraryPaths.at(library_copy)
    vectors = np.load(paths.vectors)
    meta = json.loads(paths.metadata.read_text())
    if damage == "truncated vectors":
        paths.vectors.write_bytes(paths.vectors.read_bytes()[:100])
    elif damage == "bad json":
        paths.metadata.write_text("{not json")
    elif damage == "misaligned":
        np.save(paths.vectors, vectors[:-1])
    elif damage == "not unit":
        np.save(paths.vectors, vectors * 2)
    elif damage == "float64":
        np.save(paths.vectors, vectors.astype(np.float64))
    elif damage == "missing metadata":
        paths.metadata.unlink()
    elif damage == "missing segments":
        paths.segments.unlink()
    elif damage == "wrong version":
        paths.metadata.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DatabaseError, match="rebuild"):
        load_database(paths)


def test_seed_format_metadata_still_loads(tmp_path):
    paths = LibraryPaths.at(tmp_path)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8)).astype(np.float32)
    np.save(paths.vectors, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    seed = [{"id": i, "file_path": f"music/{i}.mp3", "title": f"t{i}", "mood": "calm", "genre": "jazz"}
            for i in range(3)]
    paths.metadata.write_text(json.dumps(seed))
    db = load_database(paths, clap_model="anything", dim=8)
    assert db.tracks == seed and db.segments is None and db.clap_model is None


def test_rebuild_re_embeds_everything_from_processed_music(library_copy, clap_audio, monkeypatch):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    meta = json.loads(paths.metadata.read_text())
    meta["tracks"][0]["title"] = "A title fixed by hand"
    paths.metadata.write_text(json.dumps(meta))
    report = build_library(clap_audio, paths, rebuild=True, progress=False)
    after = load_database(paths)
    assert len(report.added) == len(before)
    assert sorted(t["sha256"] for t in after.tracks) == sorted(t["sha256"] for t in before.tracks)
    assert "A title fixed by hand" in [t["title"] for t in after.tracks]
    order = {t["sha256"]: i for i, t in enumerate(before.tracks)}
    for i, t in enumerate(after.tracks):
        np.testing.assert_array_equal(after.vectors[i], before.vectors[order[t["sha256"]]])


def test_deleted_database_is_rebuilt_from_processed_music(library_copy, clap_audio):
    paths = LibraryPaths.at(library_copy)
    count = len(load_database(paths))
    for path in (paths.vectors, paths.metadata, paths.segments):
        path.unlink()
    assert len(build_library(clap_audio, paths, progress=False).added) == count


def test_list_prints_the_library(library_copy, call_cli):
    done = call_cli(mtv.main, "--list")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["#", "title", "artist"] and len(lines) == 1 + len(load_database(
        LibraryPaths.at(library_copy)))


def test_sample_import_brings_the_bundled_tracks_with_licence(isolated_library, checkpoints, sample_tracks, call_cli):
    done = call_cli(mtv.main, "--sample", "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    db = load_database(LibraryPaths.at(isolated_library))
    assert len(db) == len(sample_tracks) == 28
    assert {t["mood"] for t in db.tracks} == {"calm", "energetic", "happy", "nostalgic", "tender"}
    assert {t["genre"] for t in db.tracks} == {"acoustic", "electronic"}
    licence = isolated_library / "processed_music" / "immich-memories-music-LICENSE-MUSIC.txt"
    assert "MIT" in licence.read_text()
    again = call_cli(mtv.main, "--sample", "--clap-model", checkpoints["clap"])
    assert again.returncode == 0 and "already in the library" in again.stderr
    assert len(load_database(LibraryPaths.at(isolated_library))) == 28


def test_bad_model_path_is_one_clear_line(isolated_library, sample_tracks, tmp_path, call_cli):
    put_in_new_music(isolated_library, sample_tracks[:1])
    done = call_cli(mtv.main, "--clap-model", str(tmp_path / "no-such-model"))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot load the CLAP model") and "--clap-model" in line
    assert (isolated_library / "new_music" / sample_tracks[0].parent.name / sample_tracks[0].name).exists()


def test_rebuild_repairs_a_broken_database(library_copy, clap_audio):
    """The error for a damaged database says to run --rebuild; that must then work from the music alone."""
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    paths.metadata.write_text("{not json")
    with pytest.raises(DatabaseError, match="rebuild"):
        build_library(clap_audio, paths, progress=False)
    report = build_library(clap_audio, paths, rebuild=True, progress=False)
    after = load_database(paths, clap_model=clap_audio.name)
    assert len(report.added) == len(before) and not report.failed
    assert sorted(t["sha256"] for t in after.tracks) == sorted(t["sha256"] for t in before.tracks)


# ---------------------------------------------------------------------------------------------- integrity


def _new_track(library, sample_tracks):
    """A real track that the library does not hold yet, dropped into new_music/calm/."""
    listed = {p.name for p in (library / "processed_music").rglob("*")}
    return put_in_new_music(library, [t for t in sample_tracks if t.name not in listed][:1])[0]


def _leftovers(library):
    return sorted(p.name for p in library.iterdir() if p.name.startswith("."))


def test_a_commit_stopped_after_its_commit_point_is_finished_by_the_next_load(library_copy, clap_audio,
                                                                            sample_tracks, monkeypatch):
    """As a crash right after the metadata was replaced: readers see the new library, and the first load that can
    take the lock renames the staged files into place and makes the moves, embedding nothing."""
    from filelock import FileLock

    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    dropped = _new_track(library_copy, sample_tracks)
    monkeypatch.setattr(library, "finish_commit", lambda paths, commit: [])  # "killed" after the commit point
    build_library(clap_audio, paths, progress=False)
    monkeypatch.undo()
    assert dropped.exists() and any(".commit-" in name for name in _leftovers(library_copy))
    assert np.load(paths.vectors).shape[0] == len(before)  # the old file is still in place

    with FileLock(paths.lock):  # a builder is busy: the reader reads the staged files where they are
        assert len(load_database(paths)) == len(before) + 1
    assert any(".commit-" in name for name in _leftovers(library_copy))
    monkeypatch.setattr(build, "embed_track", lambda *a: pytest.fail("re-embedded"))
    after = load_database(paths)
    assert len(after) == len(before) + 1 and _leftovers(library_copy) == []
    assert np.load(paths.vectors).shape[0] == len(before) + 1
    assert not dropped.exists() and (library_copy / after.tracks[-1]["file_path"]).is_file()
    assert load_database(paths).tracks == after.tracks


def test_a_read_during_a_commit_returns_one_whole_state(library_copy, clap_audio, sample_tracks, monkeypatch):
    """A commit landing while a reader loads the files: the reader notices and reads again."""
    paths = LibraryPaths.at(library_copy)
    count = len(load_database(paths))
    _new_track(library_copy, sample_tracks)
    real, calls = library._load_committed, []

    def load_then_commit(*args):
        db = real(*args)
        if not calls:
            calls.append(len(db))
            build_library(clap_audio, paths, progress=False)  # commits while this read is under way
        return db

    monkeypatch.setattr(library, "_load_committed", load_then_commit)
    assert calls == [] and len(load_database(paths)) == count + 1 and calls == [count]


def test_a_deleted_file_is_dropped_from_the_library(library_copy, clap_audio, monkeypatch):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    gone = before.tracks[1]
    (library_copy / gone["file_path"]).unlink()
    monkeypatch.setattr(build, "embed_track", lambda *a: pytest.fail("re-embedded"))
    report = build_library(clap_audio, paths, progress=False)
    assert report.dropped == [gone["file_path"]] and not report.added
    assert f"Note: {gone['file_path']} is no longer there; removed from the library." in report.problem_lines()
    after = load_database(paths)
    assert [t["sha256"] for t in after.tracks] == [t["sha256"] for t in before.tracks if t is not gone]
    for i, track in enumerate(after.tracks):  # every other track keeps its vector and its windows
        j = next(k for k, t in enumerate(before.tracks) if t["sha256"] == track["sha256"])
        np.testing.assert_array_equal(after.vectors[i], before.vectors[j])
        a, b = track["segment_offset"], before.tracks[j]["segment_offset"]
        np.testing.assert_array_equal(after.segments[a:a + track["segment_count"]],
                                      before.segments[b:b + track["segment_count"]])


def test_no_file_at_all_is_a_wrong_folder_not_an_empty_library(library_copy, clap_audio):
    paths = LibraryPaths.at(library_copy)
    before = _snapshot(paths)
    shutil.move(library_copy / "processed_music", library_copy / "elsewhere")
    report = build_library(clap_audio, paths, progress=False)
    assert report.dropped == [] and any("is the library folder right?" in line for line in report.problem_lines())
    assert _snapshot(paths) == before


@pytest.mark.parametrize("old_records", [False, True], ids=["records with from_file", "records of an older version"])
def test_a_file_moved_inside_the_library_is_found_again_by_its_hash(library_copy, clap_audio, monkeypatch,
                                                                   old_records):
    """Renamed and moved to another mood folder: the record follows it (path, mood, title from the name), keeps
    what was fixed by hand, and is not embedded again nor reported as a duplicate on every run."""
    paths = LibraryPaths.at(library_copy)
    meta = json.loads(paths.metadata.read_text())
    if old_records:
        for track in meta["tracks"]:
            track.pop("from_file")
    moved, edited = meta["tracks"][0], meta["tracks"][1]
    edited["title"] = "Fixed by hand"
    paths.metadata.write_text(json.dumps(meta))
    before = load_database(paths)
    new_place = library_copy / "processed_music" / "wistful" / "Evening acoustic – été.opus"
    new_place.parent.mkdir()
    (library_copy / moved["file_path"]).rename(new_place)
    other = library_copy / "processed_music" / "wistful" / "kept.opus"
    (library_copy / edited["file_path"]).rename(other)
    monkeypatch.setattr(build, "embed_track", lambda *a: pytest.fail("re-embedded"))

    report = build_library(clap_audio, paths, progress=False)
    assert report.relocated == [(moved["file_path"], "processed_music/wistful/Evening acoustic – été.opus"),
                                (edited["file_path"], "processed_music/wistful/kept.opus")]
    assert report.duplicates == [] and report.dropped == [] and report.added == []
    after = load_database(paths)
    record = after.tracks[0]
    assert (record["file_path"], record["mood"], record["title"]) == (
        "processed_music/wistful/Evening acoustic – été.opus", "wistful", "Evening acoustic – été")
    assert record["genre"] == moved["genre"] and record["sha256"] == moved["sha256"]
    assert (after.tracks[1]["title"], after.tracks[1]["mood"]) == ("Fixed by hand", "wistful")
    np.testing.assert_array_equal(after.vectors, before.vectors)
    again = build_library(clap_audio, paths, progress=False)
    assert again.problem_lines() == [] and load_database(paths).tracks == after.tracks


def test_interrupting_the_builder_is_one_line_and_loses_nothing(library_copy, checkpoints, sample_tracks,
                                                                monkeypatch, capsys):
    paths = LibraryPaths.at(library_copy)
    before = _snapshot(paths)
    dropped = _new_track(library_copy, sample_tracks)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    for module, where in ((build, "embed_track"), (library, "write_atomically")):  # embedding; committing
        with monkeypatch.context() as patch:
            patch.setattr(module, where, ctrl_c)
            assert mtv.main(["--clap-model", checkpoints["clap"], "--precision", "fp32"]) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("Interrupted: nothing was lost") and "Traceback" not in "".join(err)
        assert _snapshot(paths) == before and dropped.exists() and _leftovers(library_copy) == []
    assert mtv.main(["--clap-model", checkpoints["clap"], "--precision", "fp32"]) == 0
    assert not dropped.exists()


def test_database_files_get_the_umask_permissions(library_copy, clap_audio, sample_tracks):
    paths = LibraryPaths.at(library_copy)
    _new_track(library_copy, sample_tracks)
    old = os.umask(0o022)
    try:
        build_library(clap_audio, paths, progress=False)
    finally:
        os.umask(old)
    for path in (paths.vectors, paths.segments, paths.metadata):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_a_symlinked_track_is_moved_as_a_link_that_still_plays(isolated_library, clap_audio, sample_tracks,
                                                               tmp_path):
    outside = tmp_path / "my music" / sample_tracks[0].name
    outside.parent.mkdir()
    shutil.copyfile(sample_tracks[0], outside)
    link = isolated_library / "new_music" / "calm" / "linked.opus"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(outside, link.parent))  # relative: it would break if moved as it is
    report = build_library(clap_audio, LibraryPaths.at(isolated_library), progress=False)
    (record,) = report.added
    moved = isolated_library / record["file_path"]
    assert moved.is_symlink() and moved.resolve() == outside.resolve() and not os.path.lexists(link)
    assert outside.read_bytes() == sample_tracks[0].read_bytes()


def test_an_installed_copy_keeps_its_library_in_the_home_folder(tmp_path, monkeypatch):
    """Run from the source tree the library is that folder; a pip-installed copy (no new_music/ beside the package,
    which lives in site-packages) uses ~/music-mood, never site-packages."""
    monkeypatch.delenv("MUSIC_MOOD_HOME")
    assert LibraryPaths.at().root == library.PROJECT_FOLDER
    monkeypatch.setattr(library, "PROJECT_FOLDER", tmp_path / "site-packages")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert LibraryPaths.at().root == tmp_path / "home" / "music-mood"


def test_a_long_build_keeps_what_it_embedded_when_interrupted(library_copy, clap_audio, sample_tracks, monkeypatch):
    """A build commits as it goes (every commit_every_s): Ctrl-C during the second track keeps the first, added
    and moved; the next run adds only the second."""
    paths = LibraryPaths.at(library_copy)
    count = len(load_database(paths))
    listed = {p.name for p in (library_copy / "processed_music").rglob("*")}
    first, second = put_in_new_music(library_copy, [t for t in sample_tracks if t.name not in listed][:2])
    real, calls = build.embed_track, []

    def interrupted_at_the_second(clap, audio):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(clap, audio)

    monkeypatch.setattr(build, "embed_track", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        build_library(clap_audio, paths, progress=False, commit_every_s=0)
    after = load_database(paths)
    assert len(after) == count + 1 and after.tracks[-1]["file_path"].endswith(first.name)
    assert not first.exists() and (library_copy / after.tracks[-1]["file_path"]).is_file() and second.exists()
    assert _leftovers(library_copy) == []
    monkeypatch.setattr(build, "embed_track", real)
    report = build_library(clap_audio, paths, progress=False)
    assert [Path(r["file_path"]).name for r in report.added] == [second.name] and len(load_database(paths)) == count + 2
