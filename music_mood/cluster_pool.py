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
  actors, so decoded audio (~35 MB a 3-minute track) never piles up in the object store; no more at once than the
  CPUs the actors leave free, so a decoding's deadline runs only while it can run.
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
    from tqdm import tqdm

    pool = _Pool(wanted, folder, clap, choice, actor_threads, timeout_s, clock)
    try:
        with tqdm(total=len(wanted), desc="Embedding on the cluster", unit="file", file=sys.stderr,
                  disable=not progress or None) as pool.bar:
            while pool.left():
                pool.turn()
    finally:  # nothing of this run goes on working on the cluster: a later run gets every CPU
        pool.stop()
    return pool.embedded, pool.failed


class _Pool:
    """The driver's state of one embed_files run: every file in one place (waiting, decoding, decoded, embedding)
    and every actor in one (starting, idle, embedding a file). Each turn() starts what can start, waits for the
    first thing to come back or the nearest deadline, and takes in what came back or gave up."""

    def __init__(self, wanted: dict[str, Path], folder: Path, clap, choice: ModelChoice, actor_threads: int,
                 timeout_s: float, clock):
        import ray

        self.ray, self.folder, self.timeout_s, self.clock = ray, folder, timeout_s, clock
        self.sample_rate = clap.runtime.sampling_rate
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        self.size = gpus or max(1, cpus - 1)
        # Decodings run at once when handed out (a CPU actor holds its CPU for good): a file handed to Ray to wait
        # for a CPU behind a hung decoder would spend its own deadline waiting and miss it.
        self.decode_slots = max(1, cpus - (0 if gpus else self.size))
        self.hooks = {name: os.environ[name] for name in (EXIT_ON_ENV, EXIT_ONCE_ENV, HANG_ON_ENV, HANG_DECODING_ON_ENV)
                      if name in os.environ}
        self.actor_class = ray.remote(EmbedActor).options(
            max_restarts=0, max_task_retries=0, **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        self.actor_args = (clap.name, choice, None if gpus else actor_threads, self.hooks)
        self.decode = ray.remote(decode_file).options(num_cpus=1, max_retries=RETRIES_AFTER_A_DEATH)
        self.waiting = deque(_File(sha, path, file_deadline_s(_size(path), timeout_s)) for sha, path in wanted.items())
        self.decoding: dict = {}  # ObjectRef -> (_File, deadline)
        self.decoded: deque[_File] = deque()  # decoded (or decoding failed: the actor reports it), for an actor
        self.embedding: dict = {}  # ObjectRef -> (_File, actor, deadline)
        self.starting: dict = {}  # ready() ObjectRef -> actor
        self.idle: list = []
        self.embedded: list[str] = []
        self.failed: dict[str, str] = {}
        self.last_progress = clock()
        self.bar = None  # the progress bar, set by embed_files

    def left(self) -> int:
        """How many files are not done yet."""
        return len(self.waiting) + len(self.decoding) + len(self.decoded) + len(self.embedding)

    def turn(self) -> None:
        """Start actors, decodings and embeddings; wait for one result (or a deadline); take in what came back;
        give up the files past their deadline. Raises ClusterStalled when nothing came back for timeout_s."""
        self.start()
        deadlines = [d for _, d in self.decoding.values()] + [d for _, _, d in self.embedding.values()]
        # Stalled: nothing back for timeout_s, and no file in flight that may still come back in time.
        stalled_at = max([self.last_progress + self.timeout_s, *deadlines])
        until = min([*deadlines, stalled_at])
        ready, _ = self.ray.wait([*self.decoding, *self.embedding, *self.starting], num_returns=1,
                                 timeout=max(0.0, until - self.clock()))
        now = self.clock()
        for ref in ready:
            self.last_progress = now
            if ref in self.starting:
                self.started(ref)
            elif ref in self.decoding:  # decoded, or failed: the actor is handed the ref either way
                file, _ = self.decoding.pop(ref)
                self.decoded.append(file)
            else:
                self.embedded_one(ref)
        self.expire(now)
        if now >= stalled_at and self.last_progress < now:  # this turn neither got nor gave up anything
            raise ClusterStalled(
                f"the cluster gave nothing back for {self.timeout_s:.0f} s ({len(self.starting)} embedding "
                f"worker(s) still starting, {self.left()} file(s) left): nothing was committed; the "
                f"{len(self.embedded)} file(s) embedded so far are kept for the next run")

    def start(self) -> None:
        """Start the actors still needed, decode a file ahead of each actor, hand decoded files to idle actors."""
        for _ in range(min(self.size, self.left()) - len(self.idle) - len(self.starting) - len(self.embedding)):
            actor = self.actor_class.remote(*self.actor_args)
            self.starting[actor.ready.remote()] = actor
        while (self.waiting and len(self.decoding) < self.decode_slots
               and len(self.decoding) + len(self.decoded) <= self.size):
            file = self.waiting.popleft()
            file.decoded = self.decode.remote(str(file.path), file.sha256, self.sample_rate, self.hooks)
            self.decoding[file.decoded] = (file, self.clock() + file.deadline_s)
        while self.decoded and self.idle:
            file, actor = self.decoded.popleft(), self.idle.pop()
            file.attempts += 1
            self.embedding[actor.embed_decoded.remote(file.decoded)] = (file, actor, self.clock() + file.deadline_s)

    def started(self, ref) -> None:
        """An actor came up (or could not: then no actor ever will, and the run ends)."""
        actor = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the model cannot load
            raise ClusterStalled(f"an embedding worker could not start: {_first_line(e)}") from e
        self.idle.append(actor)

    def embedded_one(self, ref) -> None:
        """A file came back from its actor: its shard written, or why it failed; an actor that died is retired and
        its file tried once more."""
        file, actor, _ = self.embedding.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError:  # the actor died on this file
            self.retire(actor)
            if file.attempts <= RETRIES_AFTER_A_DEATH:
                self.decoded.appendleft(file)
            else:
                self.give_up(file, WORKER_DIED)
            return
        except self.ray.exceptions.RayError as e:  # its decoding task died twice, or failed
            self.idle.append(actor)
            self.give_up(file, WORKER_DIED if _worker_died(e) else _first_line(e))
            return
        self.idle.append(actor)
        if result["error"]:
            self.give_up(file, result["error"])
        else:
            write_shard(self.folder, file.sha256, result["shard"])
            self.embedded.append(file.sha256)
            self.bar.update()

    def expire(self, now: float) -> None:
        """Give up the files past their deadline, stopping their worker (a hung decoder or actor)."""
        for ref, (file, deadline) in list(self.decoding.items()):
            if now >= deadline:
                del self.decoding[ref]
                self.ray.cancel(ref, force=True)  # ends the hung worker process
                self.give_up(file, too_slow(file.deadline_s))
                self.last_progress = now
        for ref, (file, actor, deadline) in list(self.embedding.items()):
            if now >= deadline:
                del self.embedding[ref]
                self.retire(actor)
                self.give_up(file, too_slow(file.deadline_s))
                self.last_progress = now

    def retire(self, actor) -> None:
        """A dead or hung actor: a new one takes its place at the next turn, if still needed."""
        self.ray.kill(actor, no_restart=True)

    def give_up(self, file: _File, reason: str) -> None:
        self.failed[file.sha256] = reason
        self.bar.update()

    def stop(self) -> None:
        """Cancel the decodings in flight and stop every actor."""
        for ref in self.decoding:
            self.ray.cancel(ref, force=True)
        for actor in [*self.idle, *self.starting.values(), *(actor for _, actor, _ in self.embedding.values())]:
            self.ray.kill(actor, no_restart=True)


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
