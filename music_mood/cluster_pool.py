"""The driver's own scheduling of a build on a Ray cluster: decoding tasks, a pool of embedding actors, and a deadline
for every file, so that a `--ray` build never waits without end.

Why not Ray Data's actor pool (which this replaced): in Ray 2.60 an actor of a map_batches pool that dies while a block
is pending is restarted by Ray, but the pool keeps the handle it had. Its state refresh (`_update_running_actor_state`
in ray/data/_internal/execution/operators/actor_pool_map_operator.py) takes a dead or unknown state as "died" and
drops the actor from the heap it hands blocks from, while the actor stays counted in the pool's size. A pool whose
minimum is its maximum (one actor on a 2-CPU cluster) is then never scaled up again, and with max_errored_blocks=-1
(a dead worker's file must be a failed file, not a failed build) no error is raised either: the driver waits with
every CPU idle. That is ray-project/ray#62746 (fix proposed in #65543, not in 2.60); whether it strikes depends on
when the refresh sees the restarting actor, which is why it hung on one CPU kind and not on another. Here the driver
holds each file's state itself, with nothing waited on without a deadline.

The scheduling, in `embed_files`:
- Files are decoded by Ray tasks (one CPU each, Ray's own retry once when the worker dies), a few ahead of the
  actors, so decoded audio (~35 MB a 3-minute track) never piles up in the object store.
- Each embedding actor is handed one decoded file at a time. An actor that dies on a file is replaced by a new one
  and the file is tried once more (RETRIES_AFTER_A_DEATH); dying again, it is reported (WORKER_DIED).
- Every file in flight has a deadline (file_deadline_s: a generous floor, more for a larger file). A file not back
  by then is reported as failed, with the reason, and its worker is killed (a hung decoder or actor) and replaced.
- When nothing at all comes back for `timeout_s` (no actor can start, the cluster lost its nodes) the run ends
  with ClusterStalled; the shards embedded so far stay for the next run, and nothing is committed.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from music_mood.engines import ModelChoice
from music_mood.shards import ShardEmbedder, decode_for_embedding, write_shard

# The shortest deadline a file is given, in seconds, and what each megabyte of it adds: a 3-minute track takes about
# 11 s of one core to decode and embed (16x real time per core, benchmarks/RESULTS.md), so ten minutes is fifty
# times that; a 30 MB FLAC gets 15 minutes. Also how long the whole run may go without any progress.
DEADLINE_FLOOR_S = 600.0
DEADLINE_S_PER_MB = 10.0
# A file whose worker died is tried once more in the same run, on a new actor: a worker lost with its machine costs
# no re-run, and a file that kills its worker every time costs two deaths.
RETRIES_AFTER_A_DEATH = 1
# Test hooks. An embedding actor that meets a file of this name exits at once (os._exit), as a worker that crashes;
# with EXIT_ONCE_ENV naming a marker file, only the first time (a worker lost once: a machine gone, not the file).
EXIT_ON_ENV = "MUSIC_MOOD_RAY_EXIT_ON"
EXIT_ONCE_ENV = "MUSIC_MOOD_RAY_EXIT_ONCE"
# An embedding actor that meets a file of this name sleeps for good, as a stuck worker; the name HANG_AT_START
# makes every actor hang while it starts (a cluster where no actor can come up). HANG_DECODING_ON_ENV: the same
# in the decoding task (a decoder stuck in a loop).
HANG_ON_ENV = "MUSIC_MOOD_RAY_HANG_ON"
HANG_DECODING_ON_ENV = "MUSIC_MOOD_RAY_HANG_DECODING_ON"
HANG_AT_START = ":start"
WORKER_DIED = ("the cluster worker reading or embedding it died, and again when it was tried once more; it stays "
               "where it is, and the next run tries it again")


class ClusterStalled(RuntimeError):
    """Nothing came back from the cluster for the whole deadline: the run ends, and nothing is committed."""


def file_deadline_s(size_bytes: int, floor_s: float = DEADLINE_FLOOR_S) -> float:
    """Seconds a file of `size_bytes` may take in one stage (decoding, or embedding) before it counts as lost."""
    return floor_s + DEADLINE_S_PER_MB * size_bytes / 1e6


def too_slow(deadline_s: float) -> str:
    """The reason given for a file that did not come back within its deadline."""
    return (f"it did not come back from the cluster within {deadline_s:.0f} s (its worker hung, or its machine was "
            f"lost); its worker was stopped, the file stays where it is, and the next run tries it again")


class EmbedActor(ShardEmbedder):
    """One actor of the embedding pool: loads CLAP's audio tower once (resolved on its own node, so bf16 on a GPU
    with precision "auto"), with `threads` inference threads on a CPU."""

    def __init__(self, clap_model: str, choice: ModelChoice, threads: int | None = None,
                 hooks: dict | None = None):
        from music_mood.models import load_clap_audio

        self.hooks = hooks or {}
        if self.hooks.get(HANG_ON_ENV) == HANG_AT_START:
            time.sleep(1e9)
        if threads:
            os.environ.setdefault("MUSIC_MOOD_THREADS", str(threads))
        super().__init__(load_clap_audio(clap_model, choice), clap_model)

    def ready(self) -> bool:
        return True

    def embed_decoded(self, decoded: dict) -> dict:
        name = Path(decoded["path"]).name
        if name == self.hooks.get(EXIT_ON_ENV):
            marker = self.hooks.get(EXIT_ONCE_ENV)
            if not marker or not os.path.exists(marker):
                if marker:
                    Path(marker).touch()
                os._exit(1)  # the test hook: die as a crashing worker does, with no exception to report
        if name == self.hooks.get(HANG_ON_ENV):
            time.sleep(1e9)
        return super().embed_decoded(decoded)


def decode_file(path: str, sha256: str, sample_rate: int, hooks: dict) -> dict:
    """The decoding task: shards.decode_for_embedding, and the test hook of a decoder that hangs."""
    if Path(path).name == hooks.get(HANG_DECODING_ON_ENV):
        time.sleep(1e9)
    return decode_for_embedding(path, sha256, sample_rate)


@dataclass
class _File:
    """One file on its way through the cluster."""

    sha256: str
    path: Path
    deadline_s: float
    attempts: int = 0
    decoded: object = None  # the ObjectRef of its decoded audio, once decoding was asked for


def embed_files(wanted: dict[str, Path], folder: Path, clap, choice: ModelChoice, actor_threads: int,
                timeout_s: float = DEADLINE_FLOOR_S, progress: bool = True, clock=time.monotonic
                ) -> tuple[list[str], dict[str, str]]:
    """Decode and embed the files `wanted` ({sha256: path}) on the connected cluster, writing each result as a shard
    in `folder` as it comes back. Returns (the contents embedded, {content: why it failed}).

    `clap` is the driver's model (its name and sample rate are the job's). Actors: one per GPU, else one per CPU but
    one (a CPU is left to decode into), each reserving one CPU and running `actor_threads` inference threads.
    `timeout_s` is the floor of every file's deadline (file_deadline_s) and how long the run may go with nothing
    coming back before it raises ClusterStalled.
    """
    import ray
    from tqdm import tqdm

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    size = gpus or max(1, cpus - 1)
    hooks = {name: os.environ[name] for name in (EXIT_ON_ENV, EXIT_ONCE_ENV, HANG_ON_ENV, HANG_DECODING_ON_ENV)
             if name in os.environ}
    actor_class = ray.remote(EmbedActor).options(
        max_restarts=0, max_task_retries=0, **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    actor_args = (clap.name, choice, None if gpus else actor_threads, hooks)
    decode = ray.remote(decode_file).options(num_cpus=1, max_retries=RETRIES_AFTER_A_DEATH)

    waiting = deque(_File(sha, path, file_deadline_s(_size(path), timeout_s)) for sha, path in wanted.items())
    decoding: dict = {}  # ObjectRef -> (_File, deadline)
    decoded: deque[_File] = deque()  # decoded (or decoding failed: the actor reports it), waiting for an actor
    embedding: dict = {}  # ObjectRef -> (_File, actor, deadline)
    starting: dict = {}  # ready() ObjectRef -> actor
    idle: list = []
    embedded, failed = [], {}
    last_progress = clock()

    def retire(actor):  # a dead or hung actor: a new one takes its place at the top of the loop, if still needed
        ray.kill(actor, no_restart=True)

    def give_up(file: _File, reason: str):
        failed[file.sha256] = reason
        bar.update()

    try:
        with tqdm(total=len(wanted), desc="Embedding on the cluster", unit="file", file=sys.stderr,
                  disable=not progress or None) as bar:
            while waiting or decoding or decoded or embedding:
                left = len(waiting) + len(decoding) + len(decoded) + len(embedding)
                for _ in range(min(size, left) - len(idle) - len(starting) - len(embedding)):
                    actor = actor_class.remote(*actor_args)
                    starting[actor.ready.remote()] = actor
                while waiting and len(decoding) + len(decoded) <= size:  # decode a file ahead of each actor
                    file = waiting.popleft()
                    file.decoded = decode.remote(str(file.path), file.sha256, clap.runtime.sampling_rate, hooks)
                    decoding[file.decoded] = (file, clock() + file.deadline_s)
                while decoded and idle:
                    file, actor = decoded.popleft(), idle.pop()
                    file.attempts += 1
                    embedding[actor.embed_decoded.remote(file.decoded)] = (file, actor, clock() + file.deadline_s)

                deadlines = [d for _, d in decoding.values()] + [d for _, _, d in embedding.values()]
                # Stalled: nothing back for timeout_s, and no file in flight that may still come back in time.
                stalled_at = max([last_progress + timeout_s, *deadlines])
                until = min([*deadlines, stalled_at])
                ready, _ = ray.wait([*decoding, *embedding, *starting], num_returns=1,
                                    timeout=max(0.0, until - clock()))
                now = clock()
                for ref in ready:
                    last_progress = now
                    if ref in starting:
                        actor = starting.pop(ref)
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayError as e:  # the model cannot load: no actor ever will
                            raise ClusterStalled(f"an embedding worker could not start: {_first_line(e)}") from e
                        idle.append(actor)
                    elif ref in decoding:  # decoded, or failed: the actor is handed the ref either way
                        file, _ = decoding.pop(ref)
                        decoded.append(file)
                    else:
                        file, actor, _ = embedding.pop(ref)
                        try:
                            result = ray.get(ref)
                        except ray.exceptions.RayActorError:  # the actor died on this file
                            retire(actor)
                            if file.attempts <= RETRIES_AFTER_A_DEATH:
                                decoded.appendleft(file)
                            else:
                                give_up(file, WORKER_DIED)
                            continue
                        except ray.exceptions.RayError as e:  # its decoding task died twice, or failed
                            idle.append(actor)
                            give_up(file, WORKER_DIED if _worker_died(e) else _first_line(e))
                            continue
                        idle.append(actor)
                        if result["error"]:
                            give_up(file, result["error"])
                        else:
                            write_shard(folder, file.sha256, result["shard"])
                            embedded.append(file.sha256)
                            bar.update()
                for ref, (file, deadline) in list(decoding.items()):
                    if now >= deadline:
                        del decoding[ref]
                        ray.cancel(ref, force=True)  # ends the hung worker process
                        give_up(file, too_slow(file.deadline_s))
                        last_progress = now
                for ref, (file, actor, deadline) in list(embedding.items()):
                    if now >= deadline:
                        del embedding[ref]
                        retire(actor)
                        give_up(file, too_slow(file.deadline_s))
                        last_progress = now
                if now >= stalled_at and last_progress < now:  # this turn neither got nor gave up anything
                    left = len(waiting) + len(decoding) + len(decoded) + len(embedding)
                    raise ClusterStalled(
                        f"the cluster gave nothing back for {timeout_s:.0f} s ({len(starting)} embedding worker(s) "
                        f"still starting, {left} file(s) left): nothing was committed; the {len(embedded)} file(s) "
                        f"embedded so far are kept for the next run")
    finally:  # nothing of this run goes on working on the cluster: a later run gets every CPU
        for ref in decoding:
            ray.cancel(ref, force=True)
        for actor in [*idle, *starting.values(), *(actor for _, actor, _ in embedding.values())]:
            ray.kill(actor, no_restart=True)
    return embedded, failed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _worker_died(error: Exception) -> bool:
    import ray

    return isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)) or isinstance(
        getattr(error, "cause", None), ray.exceptions.WorkerCrashedError)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
