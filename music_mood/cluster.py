"""Building the library on a Ray cluster (`python music_to_vector.py --ray`): the same read → embed → commit as
build.py, with decoding and embedding spread over the cluster's CPUs and GPUs (cluster_pool.py schedules them).

1. The driver lists the files (build.pending_files) and hashes them, under the library lock.
2. The driver runs two stages on the cluster (cluster_pool.py): decoding (shards.decode_for_embedding, one CPU task
   per file, a few files ahead of the embedders, so decoded audio, ~35 MB a 3-minute track, never piles up) and
   embedding (shards.ShardEmbedder, in a pool of actors that each hold CLAP's audio tower: one per GPU with
   num_gpus=1 when the cluster has GPUs, in bf16 there with --precision auto; else one per CPU but one, a thread
   each), each actor handed one track at a time. Every file has a deadline: one that does not come back in time is
   reported as failed and its worker replaced, and a run that gets nothing back for that long ends (ClusterStalled).
3. As each result comes back, the driver writes it as a shard (shards.py) into .ray-staging/ in the library folder.
4. build.build_library commits, with a reader that takes each file's vectors from its shard, so the library is the
   one the plain builder writes: the same records in the same order (pending_files': new_music/ sorted, then the
   unlisted files of processed_music/ sorted), one commit through library.save_database, then the moves.
5. The shards are removed. The lock is held from 1 to 5.

Killed anywhere, nothing is lost: the library is as its last commit left it, and a re-run embeds only the files
that have no shard yet (shards of contents the library already holds are ignored). A file whose worker dies twice,
or that does not come back within its deadline, is named as failed and stays where it is; the next run tries it
again. Every node needs this project's requirements
and the library folder at the same path (a shared file system): workers read the audio files where the driver
listed them. This package itself is shipped to the workers with the job.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from music_mood.audio import AudioError, KnownFile, file_sha256, read_tags
from music_mood.build import BuildReport, build_library, database_to_build_on, pending_files
from music_mood.cluster_pool import DEADLINE_FLOOR_S, embed_files
from music_mood.engines import AUTO, ModelChoice
from music_mood.library import (
    LibraryPaths,
    recover_library,
)
from music_mood.shards import EmbeddedTrack, read_shard, remove_staging, staging_folder
from music_mood.storage import acquire_lock

RAY_ADDRESS_ENV = "RAY_ADDRESS"
RAY_REQUIREMENT = "ray==2.60.0"
# A CPU actor reserves one CPU and runs this many inference threads (one thread per core embeds the most per core:
# 8 windows took 637 ms on one thread and 440 ms on two, benchmarks/RESULTS.md).
CPU_THREADS_PER_ACTOR = 1


class ClusterError(RuntimeError):
    """Ray is missing, or the cluster cannot be reached; the message says what to do."""


@dataclass
class ClusterBuild:
    """What a build on a cluster did: the build's report, the contents the cluster embedded in this run, those whose
    shards an earlier run had left, and where the time went (seconds)."""

    report: BuildReport
    embedded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line for stderr: what the cluster embedded, what earlier runs' shards gave, and the time taken."""
        s = self.seconds
        return (f"{len(self.embedded)} embedded on the cluster, {len(self.reused)} from shards an earlier run left "
                f"(listing and hashing {s.get('list_and_hash', 0):.1f} s, embedding {s.get('embed', 0):.1f} s, "
                f"committing {s.get('commit', 0):.1f} s).")


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster whose head is at `address` (host:port; default $RAY_ADDRESS), or start a local one
    on this machine (`num_cpus` of its cores, default all), without a dashboard. Ray is shut down on leaving,
    whatever happened. Raises ClusterError when Ray is not installed or the cluster cannot be reached.

    This package is shipped to the workers with the job (runtime_env py_modules), so they run the driver's code.
    """
    try:
        import ray
    except ImportError as e:
        raise ClusterError(f"--ray needs Ray on this machine and every node: pip install '{RAY_REQUIREMENT}'") \
            from e
    import music_mood

    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    options = {"include_dashboard": False, "num_cpus": num_cpus} if address is None else {}
    if address is not None:
        _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(music_mood.__file__).parent)]}, **options)
    except Exception as e:  # ConnectionError, AuthenticationError, a bad address...: no cluster to work with
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ClusterError(f"cannot connect to {where} ({reason}); see README's 'Large catalogues'") from e
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing listens at a host:port address: Ray itself retries an unreachable head for
    minutes. Other forms ("auto", "ray://...") are left to Ray."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address} (nothing answers there: {e}); is "
                           f"`ray start --head` running, and is this its address?") from e


def build_library_on_ray(clap, paths: LibraryPaths, choice: ModelChoice = AUTO,
                         rebuild: bool = False, files: list[Path] | None = None, tagger=None, progress: bool = True,
                         lock_timeout: float = 600, actor_threads: int = CPU_THREADS_PER_ACTOR,
                         fill_tempo: bool = False, timeout_s: float = DEADLINE_FLOOR_S) -> ClusterBuild:
    """build.build_library with the decoding and embedding done by the connected Ray cluster (see connect).

    `clap` is the CLAP audio model as the driver loads it (models.load_clap_audio): its name, sample rate and window
    are the job's; the driver embeds nothing with it. The workers load the same checkpoint with `choice` (the
    user's --precision and --backend), resolved on their own hardware (`actor_threads`: see embed_on_ray).
    `rebuild`, `files`, `tagger` and `fill_tempo` are build_library's (the tempos of listed tracks are read by the
    driver, as the plain builder reads them). Holds the library lock throughout.
    """
    import ray

    if not ray.is_initialized():
        raise ClusterError("not connected to a Ray cluster (use cluster.connect)")
    folder = staging_folder(paths)
    geometry = (clap.runtime.sampling_rate, clap.runtime.window_samples)
    seconds = {}
    lock = acquire_lock(paths.lock, lock_timeout)
    try:
        start = time.perf_counter()
        recover_library(paths)  # as build_library would first, so the files listed are the committed state's
        _, db = database_to_build_on(paths, clap.name, rebuild)
        known = set(db.column("sha256"))
        hashes, unreadable = _hash_files(pending_files(paths, db, files), progress)
        wanted, reused = {}, {}
        for path, sha in hashes.items():
            if sha in known or sha in wanted or sha in reused:
                continue
            if read_shard(folder, sha, clap.name, *geometry) is not None:
                reused[sha] = path
            else:
                wanted[sha] = path
        seconds["list_and_hash"] = time.perf_counter() - start

        start = time.perf_counter()
        embedded, failed = embed_files(wanted, folder, clap, choice, actor_threads, timeout_s, progress)
        seconds["embed"] = time.perf_counter() - start

        start = time.perf_counter()
        reader = _shard_reader(folder, hashes, unreadable, failed, clap.name, geometry)
        report = build_library(clap, paths, rebuild=rebuild, progress=progress, files=files,
                               commit_every_s=float("inf"), tagger=tagger, read_file=reader, lock=lock,
                               fill_tempo=fill_tempo)
        remove_staging(folder)  # after the commit: every shard it needed is in the library now
        seconds["commit"] = time.perf_counter() - start
    finally:
        lock.release()
    return ClusterBuild(report=report, embedded=embedded, reused=list(reused), seconds=seconds)


def _hash_files(candidates: list[Path], progress: bool) -> tuple[dict[Path, str], dict[Path, Exception]]:
    """{path: sha256} of the files to read, in their order, and {path: error} for those that cannot be read.

    In threads, one per core: hashlib lets go of the GIL while it hashes, and a million files are terabytes.
    """
    from tqdm import tqdm

    def digest(path: Path):
        try:
            return file_sha256(path)
        except OSError as e:
            return e

    hashes, unreadable = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for path, sha in tqdm(zip(candidates, pool.map(digest, candidates)), total=len(candidates), desc="Hashing",
                              unit="file", file=sys.stderr, disable=not progress or None):
            if isinstance(sha, Exception):
                unreadable[path] = sha
            else:
                hashes[path] = sha
    return hashes, unreadable


def _shard_reader(folder: Path, hashes: dict[Path, str], unreadable: dict[Path, Exception], failed: dict[str, str],
                  clap_model: str, geometry: tuple[int, int]):
    """build_library's reader for the commit: a file's hash from the listing, its vectors from its shard."""
    def read(path: Path, library_folder: Path, sample_rate: int, known) -> KnownFile | EmbeddedTrack:
        if path in unreadable:
            raise unreadable[path]
        sha = hashes.get(path) or file_sha256(path)
        if sha in known:
            return KnownFile(source=path, sha256=sha)
        shard = read_shard(folder, sha, clap_model, *geometry)
        if shard is None:
            raise AudioError(failed.get(sha) or f"{path.name} arrived after this run listed the files; the next "
                                                f"run adds it")
        return EmbeddedTrack(source=path, sha256=sha, tags=read_tags(path, library_folder, shard.file_tags),
                             duration_s=shard.duration_s, vector=shard.vector, segments=shard.segments,
                             last_window_start_s=shard.last_window_start_s, embedded_by=shard.embedded_by,
                             bpm=shard.bpm, beats=shard.beats)
    return read
