"""Building on a Ray cluster (music_mood/cluster.py, `music_to_vector.py --ray`): the same library as the plain
builder, and every guarantee it gives when a worker or the driver dies. The stages themselves are tested as plain
Python first. One local cluster (2 CPUs, no dashboard, token auth as Ray 2.60 starts it) serves the module and is
shut down at its end, whatever happened."""
from __future__ import annotations

import collections
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from music_mood.audio import decode_audio, file_sha256, find_audio_files
from music_mood.build import build_library
from music_mood.embed import embed_track
from music_mood.engines import ModelChoice
from music_mood.library import LibraryPaths, load_database
from music_mood.shards import (
    STAGING_FOLDER,
    Shard,
    ShardEmbedder,
    decode_for_embedding,
    encode_shard,
    read_shard,
    remove_staging,
    shard_path,
    write_shard,
)
from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
from tests import forked
from tests.conftest import ROOT, put_in_new_music, run_cli
from tests.test_crash import check_library, make_synthetic_track

# A test on the cluster that has not ended by then fails with the stack of where it waits (pytest-timeout), so a
# build that stalls can never hang the suite; the slowest took about a minute on a loaded 2-core machine.
ON_THE_CLUSTER = pytest.mark.timeout(300)


def _unit_rows(rng, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- the stages, no Ray


def test_the_embedder_stage_is_plain_python_and_gives_embed_tracks_vectors(clap_audio, sample_tracks, tmp_path):
    source = put_in_new_music(tmp_path, sample_tracks[:1])[0]
    sha, rate, window = file_sha256(source), clap_audio.runtime.sampling_rate, clap_audio.runtime.window_samples
    decoded = decode_for_embedding(str(source), sha, rate)
    assert decoded["error"] == "" and json.loads(decoded["file_tags"]) == {}  # the sample files carry no tags
    np.testing.assert_array_equal(decoded["audio"], decode_audio(source, rate))

    embedder = ShardEmbedder(clap_audio)
    out = embedder.embed_decoded(decoded)
    assert out["error"] == ""
    write_shard(tmp_path / STAGING_FOLDER, sha, out["shard"])
    shard = read_shard(tmp_path / STAGING_FOLDER, sha, clap_audio.name, rate, window)
    vector, segments, last_start = embed_track(clap_audio, decoded["audio"])
    np.testing.assert_array_equal(shard.vector, vector)
    np.testing.assert_array_equal(shard.segments, segments)
    assert (shard.last_window_start_s, shard.duration_s, shard.embedded_by) == (
        last_start, len(decoded["audio"]) / rate, clap_audio.embedded_by)
    # Not this model's, not this window's: not a shard the commit may use.
    assert read_shard(tmp_path / STAGING_FOLDER, sha, "another/model", rate, window) is None
    assert read_shard(tmp_path / STAGING_FOLDER, sha, clap_audio.name, rate, window // 2) is None


def test_a_file_that_fails_or_changed_is_a_reason_not_an_exception(clap_audio, sample_tracks, tmp_path):
    rate = clap_audio.runtime.sampling_rate
    source = put_in_new_music(tmp_path, sample_tracks[:1])[0]
    changed = decode_for_embedding(str(source), "0" * 64, rate)
    assert "changed while it was being added" in changed["error"] and changed["audio"].size == 0
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\xff\xfb" + bytes(range(256)) * 20)
    decoded = decode_for_embedding(str(broken), file_sha256(broken), rate)
    assert "not an audio file this machine can decode" in decoded["error"]
    assert ShardEmbedder(clap_audio).embed_decoded(decoded) == {"shard": b"", "error": decoded["error"]}


def test_a_torn_or_inconsistent_shard_is_refused_and_cleaning_leaves_other_files(tmp_path):
    folder, rng, sha = tmp_path / STAGING_FOLDER, np.random.default_rng(0), "ab" + "0" * 62
    good = Shard(sha256=sha, vector=_unit_rows(rng, 1, 8)[0], segments=_unit_rows(rng, 3, 8), last_window_start_s=20.5,
                 duration_s=30.5, embedded_by="onnx-int8", file_tags={"title": "Été"})
    data = encode_shard(good, "clap", 48_000, 480_000)
    path = write_shard(folder, sha, data)
    assert path == shard_path(folder, sha) and read_shard(folder, sha, "clap", 48_000, 480_000).file_tags == {
        "title": "Été"}
    path.write_bytes(data[: len(data) // 2])  # torn: as a power loss after the rename may leave it
    assert read_shard(folder, sha, "clap", 48_000, 480_000) is None
    path.write_bytes(bytearray(data[:-200]) + bytes(200))  # the members' bytes damaged
    assert read_shard(folder, sha, "clap", 48_000, 480_000) is None
    bad = Shard(**{**good.__dict__, "segments": good.segments * 2})  # not unit rows
    path.write_bytes(encode_shard(bad, "clap", 48_000, 480_000))
    assert read_shard(folder, sha, "clap", 48_000, 480_000) is None
    with pytest.raises(ValueError):
        write_shard(folder, "../escape", data)

    (folder / "ab" / f".{sha}.npz.x1y2.tmp").write_bytes(b"torn")  # a temp file a killed driver left
    (folder / "notes.txt").write_text("mine")  # not ours: stays, and so does the folder
    (folder / "cd").mkdir()
    (folder / "cd" / "cd-song.npz").write_bytes(b"not a shard name")
    remove_staging(folder)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["cd", "cd/cd-song.npz", "notes.txt"]
    (folder / "notes.txt").unlink()
    (folder / "cd" / "cd-song.npz").unlink()
    remove_staging(folder)
    assert not folder.exists()


def test_without_ray_nothing_imports_ray(isolated_library, checkpoints, sample_tracks):
    """A plain build, --list and --help in a new process: Ray is installed here, and none of them imports it."""
    put_in_new_music(isolated_library, sample_tracks[:1])
    code = ("import sys, music_to_vector as m\n"
            f"assert m.main(['--clap-model', {checkpoints['clap']!r}, '--precision', 'fp32']) == 0\n"
            "assert m.main(['--list']) == 0\n"
            "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = sorted(n for n in sys.modules if n == 'ray' or n.startswith('ray.'))\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(load_database(LibraryPaths.at(isolated_library))) == 1


# ---------------------------------------------------------------------------------------------- on a local cluster


def _ray_processes(marker: str) -> list[int]:
    """Processes whose command line names `marker` (our cluster's own temp folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, shared_exports):
    """A local Ray cluster for this module (2 CPUs, no dashboard, its own temp folder and token), shut down at the
    end whatever the tests did: cluster.connect shuts Ray down in a finally. Yields the address a driver in another
    process joins it at; that process inherits the token through the environment, as README says a driver does.
    Its workers' cache links to the run's ONNX exports, so an actor on ONNX Runtime starts in a second or two
    instead of exporting the checkpoint first."""
    from music_mood import cluster

    temp = tempfile.mkdtemp(prefix="mm-ray-")  # short: Ray's socket paths must fit in 107 bytes
    workers_cache = tmp_path_factory.mktemp("ray-workers-cache")
    (workers_cache / "onnx").symlink_to(shared_exports, target_is_directory=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", temp)
        env.setenv("RAY_AUTH_MODE", "token")  # read when Ray is imported, just below
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))  # never ~/.ray/auth_token, the user's
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("MUSIC_MOOD_CACHE", str(workers_cache))
        import ray

        try:
            with cluster.connect(num_cpus=2):
                yield ray.get_runtime_context().gcs_address
        finally:
            assert not ray.is_initialized()
            deadline = time.monotonic() + 30
            while _ray_processes(temp) and time.monotonic() < deadline:  # they exit within moments of shutdown
                time.sleep(0.5)
            leftovers = _ray_processes(temp)
            shutil.rmtree(temp, ignore_errors=True)
            assert not leftovers, f"Ray processes left running: {leftovers}"


def _new_shas(library: Path) -> set[str]:
    return {file_sha256(p) for p in (library / "new_music").rglob("*.opus")}


@pytest.fixture
def onnx_workers(clap_audio, isolated_library) -> dict:
    """build_library_on_ray's options for actors that run CLAP on ONNX Runtime (fp32), for the tests of deaths and
    deadlines, where the engine is not the point and every actor start is waited for: such an actor starts in about
    2 s on this 2-core machine, one on torch in about 6 s. Their export is made here, into the run's exports that
    the workers' cache links to, not by the first actor."""
    from music_mood.models import load_clap_audio

    options = {"choice": ModelChoice("fp32", "onnx")}
    load_clap_audio(clap_audio.name, **options)
    return options


@ON_THE_CLUSTER
def test_ray_build_gives_the_plain_builders_library(ray_cluster, built_library, isolated_library, clap_audio,
                                                   sample_tracks):
    """The same six tracks as built_library (the plain builder's): the same vectors, windows and records, in the same
    order, in one commit; the files moved, the staging folder gone."""
    from music_mood.cluster import build_library_on_ray

    put_in_new_music(isolated_library, sample_tracks[::5])
    paths = LibraryPaths.at(isolated_library)
    result = build_library_on_ray(clap_audio, paths, choice=ModelChoice("fp32"), progress=False)
    assert not result.report.failed and len(result.embedded) == 6 and result.reused == []
    plain, ray_built = load_database(LibraryPaths.at(built_library)), load_database(paths)
    np.testing.assert_allclose(ray_built.vectors, plain.vectors, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ray_built.segments, plain.segments, rtol=0, atol=1e-6)
    assert ray_built.tracks == plain.tracks
    meta = json.loads(paths.metadata.read_text())
    assert meta["commit"]["moves"] and len(meta["commit"]["moves"]) == 6  # one commit made every move
    assert not (isolated_library / STAGING_FOLDER).exists()
    assert not list((isolated_library / "new_music").rglob("*.opus"))
    check_library(isolated_library, {t["sha256"] for t in plain.tracks})


@ON_THE_CLUSTER
def test_a_worker_that_dies_loses_nothing_and_the_rerun_embeds_only_its_file(ray_cluster, library_copy, clap_audio,
                                                                           sample_tracks, monkeypatch, onnx_workers):
    """The embedding actor exits (os._exit) on one file: that file is reported and stays in new_music/, the others are
    committed; the next run embeds that file alone. A shard of a content the library holds is ignored (a copy of a
    listed track dropped in again is a duplicate, as in a plain build), and a file in the staging folder that is not
    ours stays."""
    from music_mood.cluster import build_library_on_ray
    from music_mood.cluster_pool import EXIT_ON_ENV, WORKER_DIED

    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    listed = {Path(t["file_path"]).name for t in before.tracks}
    dropped = put_in_new_music(library_copy, [t for t in sample_tracks if t.name not in listed][:3])
    shas = {path: file_sha256(path) for path in dropped}
    expected = {t["sha256"] for t in before.tracks} | set(shas.values())
    again = library_copy / "new_music" / "again" / "copy.opus"
    again.parent.mkdir()
    shutil.copyfile(library_copy / before.tracks[0]["file_path"], again)
    staging = library_copy / STAGING_FOLDER
    rng = np.random.default_rng(1)
    decoy = Shard(sha256=before.tracks[0]["sha256"], vector=_unit_rows(rng, 1, before.dim)[0],
                  segments=_unit_rows(rng, 2, before.dim), last_window_start_s=10.0, duration_s=20.0,
                  embedded_by="torch-fp32", file_tags={})
    write_shard(staging, decoy.sha256, encode_shard(decoy, clap_audio.name, clap_audio.runtime.sampling_rate,
                                                    clap_audio.runtime.window_samples))
    (staging / "README.txt").write_text("a note of the user's")

    monkeypatch.setenv(EXIT_ON_ENV, dropped[1].name)
    first = build_library_on_ray(clap_audio, paths, **onnx_workers, progress=False)
    # The crashing file is reported (and, should Ray have handed the restarting actor another one, that one too).
    failed = dict(first.report.failed)
    assert dropped[1] in failed and set(failed.values()) == {WORKER_DIED} and len(failed) < len(dropped)
    assert all(path.exists() == (path in failed) for path in dropped)
    assert first.report.duplicates == [(again, before.tracks[0]["file_path"])] and first.reused == []
    again.unlink()  # the duplicate stays where it is, as in a plain build; the invariants below are about the rest
    check_library(library_copy, expected)

    monkeypatch.delenv(EXIT_ON_ENV)
    second = build_library_on_ray(clap_audio, paths, **onnx_workers, progress=False)
    assert not second.report.failed and sorted(second.embedded) == sorted(shas[p] for p in failed)
    assert second.reused == []
    embedded = collections.Counter(first.embedded + second.embedded)
    assert set(embedded) == set(shas.values()) and max(embedded.values()) == 1  # each new file embedded once
    after = load_database(paths)
    check_library(library_copy, expected)
    np.testing.assert_array_equal(after.vectors[:len(before)], before.vectors)  # the decoy shard was not used
    assert sorted(p.name for p in staging.rglob("*")) == ["README.txt"]


@ON_THE_CLUSTER
def test_a_worker_lost_once_is_replaced_and_its_file_embedded_in_the_same_run(ray_cluster, library_copy,
                                                                              clap_audio, sample_tracks, monkeypatch,
                                                                              tmp_path, onnx_workers):
    """The embedding actor dies (os._exit) on one file the first time only, as a worker lost with its machine: Ray
    restarts the actor and tries the file again, so the run embeds every file and reports none; each once."""
    from music_mood.cluster import build_library_on_ray
    from music_mood.cluster_pool import EXIT_ON_ENV, EXIT_ONCE_ENV

    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    listed = {Path(t["file_path"]).name for t in before.tracks}
    dropped = put_in_new_music(library_copy, [t for t in sample_tracks if t.name not in listed][:3])
    shas = sorted(file_sha256(path) for path in dropped)
    marker = tmp_path / "died once"
    monkeypatch.setenv(EXIT_ON_ENV, dropped[1].name)
    monkeypatch.setenv(EXIT_ONCE_ENV, str(marker))
    result = build_library_on_ray(clap_audio, paths, **onnx_workers, progress=False)
    assert marker.exists(), "the actor never died: the test tested nothing"
    assert result.report.failed == [] and sorted(result.embedded) == shas
    assert not any(p.exists() for p in dropped) and len(load_database(paths)) == len(before) + len(dropped)
    check_library(library_copy, {t["sha256"] for t in before.tracks} | set(result.embedded))


@ON_THE_CLUSTER
@pytest.mark.parametrize("stage", ["decoding", "embedding"])
def test_a_worker_that_hangs_on_a_file_is_stopped_at_its_deadline_and_the_rest_committed(
        stage, ray_cluster, library_copy, clap_audio, sample_tracks, monkeypatch, tmp_path, onnx_workers):
    """The decoding task or the embedding actor sleeps for good on one file (a decoder stuck in a loop): at that
    file's deadline it is reported, with the reason, its worker is stopped (and an actor replaced), the other files
    are committed, and the run ends. The next run embeds that file alone."""
    from music_mood.cluster import build_library_on_ray
    from music_mood.cluster_pool import HANG_DECODING_ON_ENV, HANG_ON_ENV, file_deadline_s, too_slow

    hook = HANG_DECODING_ON_ENV if stage == "decoding" else HANG_ON_ENV

    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    listed = {Path(t["file_path"]).name for t in before.tracks}
    real = [t for t in sample_tracks if t.name not in listed]
    # The hung file is a one-second synthetic track: its deadline is the limit plus 10 s a megabyte
    # (file_deadline_s), and what the test waits for is that deadline. It is the first file handed out: an actor
    # that hangs on it is replaced and the replacement embeds the others; a decoding task that hangs on it holds
    # the one CPU the actor leaves free, and the next file must wait for that CPU without its own deadline running
    # (it is handed to Ray only once a CPU is free for it). The next file is as short as the hung one, so its
    # deadline is as long: counted from a hand-out beside the hung one, it would run out with the hung one's.
    mood = real[0].parent.name
    hung_source, tail_source = (
        make_synthetic_track(tmp_path / "short" / mood / f"0-{name}.wav", seed=seed, seconds=1.0)
        for name, seed in (("stuck", 7), ("tail", 8)))
    dropped = put_in_new_music(library_copy, [hung_source, tail_source, real[0]])
    hung = dropped[0]
    handed_out = find_audio_files(library_copy / "new_music")  # the order the files are handed out in
    assert handed_out == dropped, handed_out
    shas = {path: file_sha256(path) for path in dropped}
    # The limit is the floor of each file's deadline and how long the run may go with nothing back: a replacement
    # actor must start within it. On ONNX Runtime (onnx_workers) one starts in about 2 s; on torch (about 6 s) 15 s
    # was too short under load.
    limit = 15
    workers = onnx_workers
    monkeypatch.setenv(hook, hung.name)
    start = time.monotonic()
    first = build_library_on_ray(clap_audio, paths, **workers, progress=False, timeout_s=limit)
    took = time.monotonic() - start
    deadline = file_deadline_s(hung.stat().st_size, limit)
    assert dict(first.report.failed) == {hung: too_slow(deadline)}
    assert "did not come back from the cluster within" in too_slow(deadline)
    assert sorted(first.embedded) == sorted(shas[p] for p in dropped if p != hung)
    assert hung.exists() and not any(p.exists() for p in dropped if p != hung)
    assert deadline <= took < deadline + 240, f"the run took {took:.0f} s for a deadline of {deadline:.0f} s"
    check_library(library_copy, {t["sha256"] for t in before.tracks} | set(shas.values()))

    monkeypatch.delenv(hook)
    second = build_library_on_ray(clap_audio, paths, **workers, progress=False, timeout_s=limit)
    assert second.report.failed == [] and second.embedded == [shas[hung]]
    assert len(load_database(paths)) == len(before) + len(dropped)


@ON_THE_CLUSTER
def test_a_cluster_that_gives_nothing_back_ends_the_run_with_one_error_line(ray_cluster, library_copy, checkpoints,
                                                                         sample_tracks, tmp_path):
    """No embedding worker can come up (each hangs while it starts): after --ray-timeout with nothing back, the run
    ends with one Error: line and exit 1; nothing is committed, nothing moved, and no worker is left running on the
    cluster (the next test's build gets its CPUs)."""
    from music_mood.cluster_pool import HANG_AT_START, HANG_ON_ENV

    paths = LibraryPaths.at(library_copy)
    before = {name: (library_copy / name).read_bytes() for name in (paths.vectors.name, paths.metadata.name)}
    dropped = put_in_new_music(library_copy, sample_tracks[-2:])
    start = time.monotonic()
    # The default engines (the run's exports): the driver's own models load in a second, torch's fp32 take ten.
    done = forked.run("music_to_vector", "--library", str(library_copy), "--ray", ray_cluster, "--ray-timeout", "15",
                      "--clap-model", checkpoints["clap"], folder=tmp_path, env_extra={HANG_ON_ENV: HANG_AT_START})
    took = time.monotonic() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert errors[0].startswith("Error: the cluster gave nothing back for 15 s"), errors
    assert "nothing was committed" in errors[0] and took < 200
    assert {name: (library_copy / name).read_bytes() for name in before} == before
    assert all(path.exists() for path in dropped) and done.stdout == ""


@ON_THE_CLUSTER
def test_a_killed_driver_resumes_from_its_shards(ray_cluster, built_library, isolated_library, checkpoints,
                                                 sample_tracks, tmp_path):
    """`music_to_vector.py --ray ADDRESS` in its own process (a child forked with it imported), killed as it writes
    its third shard: the library is untouched and two shards wait; the re-run embeds only the other files, reuses the
    two, and gives the plain builder's library."""
    put_in_new_music(isolated_library, sample_tracks[::5])
    expected = _new_shas(isolated_library)
    staging = isolated_library / STAGING_FOLDER
    log = tmp_path / "points.txt"
    command = ("music_to_vector", "--ray", ray_cluster, "--clap-model", checkpoints["clap"], "--precision", "fp32")
    killed = forked.run(*command, folder=tmp_path, env_extra={CRASH_AT_ENV: "5", CRASH_LOG_ENV: str(log)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    points = [line.split("\t")[1] for line in log.read_text().splitlines()]
    assert [p.split()[0] for p in points] == ["write", "rename"] * 2 + ["write"], points  # the third shard's write
    assert all(p.endswith(".npz") for p in points)
    assert len(list(staging.rglob("*.npz"))) == 2 and len(list(staging.rglob(".*.tmp"))) == 1
    check_library(isolated_library, expected)  # nothing committed, nothing moved

    done = forked.run(*command, folder=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 embedded on the cluster, 2 from shards an earlier run left" in done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("added  ")]) == 6
    check_library(isolated_library, expected)
    assert not staging.exists()
    plain, ray_built = load_database(LibraryPaths.at(built_library)), load_database(LibraryPaths.at(isolated_library))
    np.testing.assert_allclose(ray_built.vectors, plain.vectors, rtol=0, atol=1e-6)
    assert [{k: v for k, v in t.items() if k != "auto_tags"} for t in ray_built.tracks] == plain.tracks
    assert all(t["auto_tags"] for t in ray_built.tracks)  # tagged as the plain CLI tags


def test_plain_build_after_a_ray_run_uses_nothing_of_it(library_copy, clap_audio):
    """Shards are the cluster path's alone: the plain builder neither reads nor removes them."""
    staging = library_copy / STAGING_FOLDER
    rng = np.random.default_rng(2)
    shard = Shard(sha256="cd" * 32, vector=_unit_rows(rng, 1, 4)[0], segments=_unit_rows(rng, 1, 4),
                  last_window_start_s=0.0, duration_s=3.0, embedded_by="torch-fp32", file_tags={})
    write_shard(staging, shard.sha256, encode_shard(shard, clap_audio.name, 48_000, 480_000))
    build_library(clap_audio, LibraryPaths.at(library_copy), progress=False)
    assert shard_path(staging, shard.sha256).is_file()


@pytest.mark.parametrize("argv", [["--ray", "--list"], ["--ray", "--remove", "x.mp3"]])
def test_ray_with_an_action_that_builds_nothing_is_a_usage_error(argv, call_cli):
    import music_to_vector

    done = call_cli(music_to_vector.main, *argv)
    assert done.returncode == 2 and "--ray builds the library" in done.stderr


def test_an_unreachable_cluster_is_one_error_line_at_once(isolated_library, checkpoints, sample_tracks):
    """Nothing listens at the address (Ray alone would retry for minutes): one line, exit 1, the music untouched."""
    dropped = put_in_new_music(isolated_library, sample_tracks[:1])
    start = time.monotonic()
    done = run_cli("music_to_vector.py", "--ray", "127.0.0.1:9", "--clap-model", checkpoints["clap"],
                   "--precision", "fp32")
    assert done.returncode == 1 and time.monotonic() - start < 120
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot connect to the Ray cluster at 127.0.0.1:9")
    assert [line for line in done.stderr.splitlines() if line.startswith("Error:")] == [
        done.stderr.strip().splitlines()[-1]]
    assert dropped[0].exists() and not (isolated_library / STAGING_FOLDER).exists() and done.stdout == ""
