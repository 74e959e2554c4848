"""Crash safety, tested as storage engines test it: the builder is SIGKILLed at each write, fsync, rename and file
move in turn (music_mood.storage's crash points), and at random moments after its model has loaded; after every
kill the library must load whole, hold every track exactly once or still have it waiting in new_music/, and the
next run must finish the job without embedding anything twice.

The kills land at points that the music's length does not change, so the libraries here are of short synthetic
tracks, and the runs that are killed are children forked from a process that imported the builder once
(tests/forked.py), not new interpreters: the same points, in a fraction of the time. What a real process is the
point of runs as one: the kills that strace injects at system calls, and Ctrl-C on real music."""
from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from music_mood.audio import file_sha256, find_audio_files
from music_mood.build import build_library
from music_mood.library import LibraryPaths, load_database
from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
from tests import forked
from tests.conftest import ROOT, Result, put_in_new_music

RANDOM_KILLS = 20
STARTED = "Updating the library in"  # what music_to_vector.py prints once its model is loaded
SYNTHETIC_RATE = 48_000  # CLAP's: the builder decodes these tracks without resampling
SYNTHETIC_SECONDS = 4.0
REAL_LENGTH_S = 30.0  # about a real track's: a run adding three lasts long enough for a random kill to land in it


def make_synthetic_track(target: Path, seed: int, seconds: float = SYNTHETIC_SECONDS) -> Path:
    """A short track of its own content (its own hash, for each seed): three tones and a pulse of noise, as WAV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SYNTHETIC_RATE)) / SYNTHETIC_RATE
    tones = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 3)) / 3
    pulse = (np.sin(2 * np.pi * rng.uniform(1.5, 3) * t) > 0.9) * rng.standard_normal(len(t))
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(target, (0.3 * tones + 0.1 * pulse).astype(np.float32), SYNTHETIC_RATE, subtype="FLOAT")
    return target


def make_synthetic_tracks(folder: Path, count: int, first_seed: int) -> list[Path]:
    """`count` synthetic tracks in mood folders under `folder` (to drop into new_music/ with put_in_new_music)."""
    moods = ("calm", "happy", "tender", "energetic")
    return [make_synthetic_track(folder / moods[i % len(moods)] / f"tune {first_seed + i}.wav", first_seed + i)
            for i in range(count)]


@pytest.fixture
def synthetic_library(isolated_library, clap_audio, tmp_path):
    """A library built from four short synthetic tracks in mood folders, as built_library is from real ones."""
    put_in_new_music(isolated_library, make_synthetic_tracks(tmp_path / "built-from", 4, first_seed=0))
    report = build_library(clap_audio, LibraryPaths.at(isolated_library), progress=False)
    assert not report.failed and len(report.added) == 4
    return isolated_library


def run_builder(checkpoints, folder: Path, env_extra=None, cwd: Path = ROOT) -> Result:
    """`python music_to_vector.py --clap-model <tiny CLAP>` with env_extra, as a child forked with the builder
    imported (tests/forked.py); its output is kept in `folder`."""
    return forked.run("music_to_vector", "--clap-model", checkpoints["clap"], folder=folder, env_extra=env_extra,
                      cwd=cwd)


def _audio_shas(folder: Path) -> dict[str, Path]:
    return {file_sha256(p): p for p in find_audio_files(folder)}


def check_library(root: Path, expected: set[str]) -> None:
    """The invariants after a crash (loading first, which finishes a half-done commit):
    the library loads; every expected track is listed exactly once or still waits in new_music/, never both;
    processed_music/ holds exactly the listed files, each with the content its record names."""
    paths = LibraryPaths.at(root)
    db = load_database(paths)
    listed = collections.Counter(t["sha256"] for t in db.tracks)
    assert max(listed.values(), default=1) == 1, f"a track is listed twice: {listed}"
    waiting = _audio_shas(paths.new_music)
    for sha in expected:
        assert (sha in listed) != (sha in waiting), f"track {sha[:12]} is listed and waiting, or lost"
    assert set(listed) <= expected
    on_disk = {p.relative_to(root).as_posix() for p in find_audio_files(paths.processed_music)}
    assert on_disk == {t["file_path"] for t in db.tracks}
    for track in db.tracks:
        assert file_sha256(root / track["file_path"]) == track["sha256"]


def _no_leftovers(root: Path) -> None:
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "staged or temp files left behind"


def _with_new_tracks(library: Path, tracks, count: int, base: Path | None = None) -> tuple[set[str], Path]:
    """`count` of `tracks` (real or synthetic) that the library does not hold, dropped into new_music/; returns the
    hashes of every track that must end up listed, and a copy of this starting state at `base` (when given) to
    reset to."""
    listed = {t.name for t in (library / "processed_music").rglob("*.*")}
    put_in_new_music(library, [t for t in tracks if t.name not in listed][:count])
    expected = {t["sha256"] for t in load_database(LibraryPaths.at(library)).tracks} | set(
        _audio_shas(library / "new_music"))
    if base is not None:
        shutil.copytree(library, base)
    return expected, base


def _clean_build(library: Path, clap_audio) -> dict[str, np.ndarray]:
    """Finish the job in this process (the next run) and check it: nothing fails, nothing is left waiting."""
    report = build_library(clap_audio, LibraryPaths.at(library), progress=False)
    assert not report.failed and not report.duplicates
    db = load_database(LibraryPaths.at(library))
    assert not find_audio_files(library / "new_music")
    _no_leftovers(library)
    return {t["sha256"]: db.vectors[i] for i, t in enumerate(db.tracks)}


def test_kill_at_every_write_fsync_rename_and_move(synthetic_library, clap_audio, checkpoints, tmp_path):
    library = synthetic_library
    new = make_synthetic_tracks(tmp_path / "new", 2, first_seed=100)
    expected, base = _with_new_tracks(library, new, 2, tmp_path / "base")

    log = tmp_path / "points.txt"
    done = run_builder(checkpoints, tmp_path, env_extra={CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    kinds = collections.Counter(what.split()[0] for _, what in points)
    assert kinds["write"] >= 3 and kinds["fsync"] >= 5 and kinds["rename"] >= 3 and kinds["move"] == 2, kinds
    reference = _clean_build(library, clap_audio)

    for number, what in points:
        shutil.rmtree(library)
        shutil.copytree(base, library)
        killed = run_builder(checkpoints, tmp_path, env_extra={CRASH_AT_ENV: number})
        assert killed.returncode == -signal.SIGKILL, f"not killed at point {number} ({what}): {killed.stderr}"
        check_library(library, expected)
        vectors = _clean_build(library, clap_audio)
        check_library(library, expected)
        assert vectors.keys() == reference.keys() == expected, f"after a kill at {what}"
        for sha, row in vectors.items():  # each track's own vector, as a run that was never killed made it
            # (to float rounding: the killed run's rows come from another process, whose thread count may differ)
            assert float(row @ reference[sha]) > 0.999
    print(f"killed at each of {len(points)} crash points ({dict(kinds)}); every check passed after each")


def _phase(paths: LibraryPaths) -> str:
    """Where a kill left the library, before anything repairs it."""
    import json

    from music_mood.datafiles import staged_path

    commit = json.loads(paths.metadata.read_text()).get("commit") or {}
    if commit and any(staged_path(f, commit["id"]).exists() for f in (paths.vectors, paths.segments)):
        return "after a commit point, before its renames"
    if any((paths.root / source).exists() for source, _ in commit.get("moves", [])):
        return "after a commit's renames, before its moves were done"
    if any(".commit-" in p.name or p.name.endswith(".tmp") for p in paths.root.iterdir()):
        return "while writing a commit, before its commit point"
    return "while reading or embedding (nothing half done)"


SYSCALLS = {"rename": "rename,renameat,renameat2", "fsync": "fsync,fdatasync"}


def _traced_builder(strace: str, options: list[str], checkpoints, folder: Path) -> Result:
    """run_builder under `strace -f <options>`, attached to the forked child before its main starts (so what
    strace counts and kills are the builder's system calls, not an interpreter's start-up)."""
    out, err = folder / "builder-stdout.txt", folder / "builder-stderr.txt"
    process = forked.start("music_to_vector", "--clap-model", checkpoints["clap"],
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=folder, stdout=out, stderr=err,
                           stopped=True)
    tracer = forked.attach(process, [strace, "-f", "-qq", *options, "-p"])
    code = forked.wait(process)
    _, tracer_err = tracer.communicate(timeout=60)
    assert tracer.returncode == 0, tracer_err
    return Result(code, out.read_text(errors="replace"), err.read_text(errors="replace"))


def test_kill_at_each_real_rename_and_fsync_system_call(synthetic_library, clap_audio, checkpoints, tmp_path):
    """The same kills, injected by strace at the system calls themselves rather than at the code's crash points,
    so a rename or fsync that no crash point announces would be caught too."""
    strace = shutil.which("strace")
    assert strace, "this test needs strace (apt-get install strace), as README's test command installs it"
    library = synthetic_library
    new = make_synthetic_tracks(tmp_path / "new", 2, first_seed=100)
    expected, base = _with_new_tracks(library, new, 2, tmp_path / "base")
    trace = tmp_path / "trace.txt"
    done = _traced_builder(strace, ["-o", str(trace), "-e", f"trace={','.join(SYSCALLS.values())}"], checkpoints,
                           tmp_path)
    assert done.returncode == 0, done.stderr
    calls = {kind: sum(1 for line in trace.read_text().splitlines() if any(f" {name}(" in f" {line.split(' ', 1)[1]}"
                                                                           for name in names.split(",")))
             for kind, names in SYSCALLS.items()}
    assert calls["rename"] >= 5 and calls["fsync"] >= 5, calls  # the commit, two staged files, two moves
    for kind, names in SYSCALLS.items():
        for number in range(1, calls[kind] + 1):
            shutil.rmtree(library)
            shutil.copytree(base, library)
            killed = _traced_builder(strace, ["-o", os.devnull, "-e", f"trace={names}", "-e",
                                              f"inject={names}:signal=KILL:when={number}"], checkpoints, tmp_path)
            assert killed.returncode == -signal.SIGKILL, f"{kind} #{number}: {killed.stderr}"
            check_library(library, expected)
            _clean_build(library, clap_audio)
            check_library(library, expected)
    print(f"killed at each system call: {calls}; every check passed after each")


def test_random_kills_after_the_model_loaded(synthetic_library, clap_audio, checkpoints, tmp_path):
    """20 kills at random moments of runs that keep adding music, each followed by the invariants' check."""
    library = synthetic_library
    paths = LibraryPaths.at(library)
    rng = random.Random(int(os.environ.get("CRASH_TEST_SEED", "8")))
    expected = {t["sha256"] for t in load_database(paths).tracks}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    kills, runs, made, landed = 0, 0, 0, collections.Counter()
    while kills < RANDOM_KILLS:
        runs += 1
        assert runs <= 3 * RANDOM_KILLS, f"only {kills} of {runs} runs could be killed while working"
        if not find_audio_files(paths.new_music):
            for _ in range(3):
                made += 1
                target = paths.new_music / rng.choice(["calm", "happy", ""]) / f"take {made}.wav"
                make_synthetic_track(target, seed=1000 + made, seconds=REAL_LENGTH_S)
                expected.add(file_sha256(target))
        err = tmp_path / f"run-{runs}.txt"
        # Every other run dies at a random one of its writes, fsyncs, renames and moves (they take milliseconds
        # of a run, so a random time alone would almost never land there); the others at a random time.
        at_point = {CRASH_AT_ENV: str(rng.randint(1, 24))} if runs % 2 else {}
        err.write_bytes(b"")  # there to read before the child opens it
        process = forked.start("music_to_vector", "--clap-model", checkpoints["clap"], env={**env, **at_point},
                               cwd=tmp_path, stdout=os.devnull, stderr=err)
        while process.exitcode is None and STARTED not in err.read_text(errors="replace"):
            time.sleep(0.02)
        if not at_point:
            time.sleep(rng.uniform(0, 1.5))  # somewhere in reading, embedding, committing or moving
            if process.exitcode is None:
                process.kill()
        if forked.wait(process) == -signal.SIGKILL:
            kills += 1
            landed[_phase(paths)] += 1
        check_library(library, expected)
    _clean_build(library, clap_audio)
    check_library(library, expected)
    assert set(_audio_shas(paths.processed_music)) == expected
    print(f"{kills} kills in {runs} runs; where they landed: {dict(landed)}")


def test_ctrl_c_after_the_model_loaded_is_one_line(library_copy, checkpoints, sample_tracks, tmp_path):
    """A real SIGINT, as Ctrl-C sends it, while the builder works: exit 130, one line, the library whole."""
    library = library_copy
    expected, _ = _with_new_tracks(library, sample_tracks, 3)
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(ROOT / "music_to_vector.py"), "--clap-model",
                                    checkpoints["clap"]], stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path)
    while process.poll() is None and STARTED not in err.read_text(errors="replace"):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    assert process.wait() == 130
    lines = err.read_text().strip().splitlines()
    assert lines[-1].startswith("Interrupted: nothing was lost") and "Traceback" not in err.read_text()
    check_library(library, expected)
