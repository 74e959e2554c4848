"""Building the library: read (decode) → embed → commit, then the files move from new_music/ to processed_music/."""
from __future__ import annotations

import concurrent.futures
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from music_mood import beatnet
from music_mood.audio import (
    DecodedTrack,
    KnownFile,
    decode_audio,
    find_audio_files,
    read_rhythm,
    read_track,
)
from music_mood.beats import floor_chosen, needs_tracking
from music_mood.database import Database, DatabaseError, check_clap_model, compose_database, empty_database
from music_mood.embed import embed_track
from music_mood.library import LibraryPaths, load_database, pending_moves, recover_library, save_database
from music_mood.relocate import TAG_KEYS, destination, found_again, tracks_still_there
from music_mood.remote import ServerConnections
from music_mood.server_sources import (
    ServerSong,
    follow_song,
    list_server_songs,
    new_songs,
    read_song,
    server_record,
    songs_still_there,
)
from music_mood.shards import EmbeddedTrack
from music_mood.sources import ScanCache, committed_sources, library_path, source_candidates, source_of
from music_mood.storage import acquire_lock, move_file, move_obstacle, remove_empty_folders

COMMIT_EVERY_S = 300.0  # a long build commits what it has embedded this often (see build_library)


@dataclass
class BuildReport:
    """What a build did. Paths in `duplicates`/`failed` are files it left where they are."""

    added: list[dict] = field(default_factory=list)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    relocated: list[tuple[str, str]] = field(default_factory=list)  # (old file_path, new file_path)
    dropped: list[str] = field(default_factory=list)  # file_paths of tracks whose file is gone
    tempo_read: list[dict] = field(default_factory=list)  # listed tracks that were given their bpm (fill_tempo)
    warnings: list[str] = field(default_factory=list)
    tracks: int = 0  # how many tracks the library holds after the build

    def problem_lines(self) -> list[str]:
        """One line for stderr per file that was not added (and why), moved, or gone."""
        return ([f"Note: {source} is already in the library as {listed_as}; left where it is."
                 for source, listed_as in self.duplicates] +
                [f"Note: {old} was moved to {new}; the library now lists it there." for old, new in self.relocated] +
                [f"Note: {gone} is no longer there; removed from the library." for gone in self.dropped] +
                self.warnings +
                [f"Error: {source}: {reason} (left where it is)" for source, reason in self.failed])


def _prefetch(function, items, ahead: int = 2):
    """Yield (item, result or exception) in order while the next `ahead` items are computed in a thread.

    Decoding is I/O and C code that releases the GIL, so it overlaps with embedding the previous track.
    """
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(function, item) for item in items[:ahead]]
        for i, item in enumerate(items):
            if i + ahead < len(items):
                pending.append(pool.submit(function, items[i + ahead]))
            future = pending[i]
            try:
                yield item, future.result()
            except Exception as e:
                yield item, e
            pending[i] = None  # let the decoded audio go


def pending_files(paths: LibraryPaths, db: Database, files: list[Path] | None = None) -> list[Path]:
    """What a build would add: `files` (default: every audio file in new_music/), plus any audio file in
    processed_music/ that `db` does not list (moved there by hand, or by a run that stopped before saving)."""
    listed = set(db.column("file_path"))
    candidates = list(files) if files is not None else find_audio_files(paths.new_music)
    return candidates + [p for p in find_audio_files(paths.processed_music)
                         if p.relative_to(paths.root).as_posix() not in listed]


def build_library(clap, paths: LibraryPaths, rebuild: bool = False, lock_timeout: float = 600,
                  progress: bool = True, files: list[Path] | None = None,
                  commit_every_s: float = COMMIT_EVERY_S, tagger=None, fill_tempo: bool = False, read_file=None,
                  lock=None, servers: ServerConnections | None = None) -> BuildReport:
    """Bring the database up to date with the music, then move the added files into processed_music/.

    Reads (read_track) every file of new_music/ and every file of processed_music/ the database does not list;
    embeds (embed_track) those whose content is new; then commits (save_database) the added tracks, the tracks
    found again at another place (a file moved or renamed by hand, matched by its hash) and the removal of tracks
    whose file is gone, together with the moves. A long build also commits what it has embedded every
    `commit_every_s` seconds, so an interruption keeps that work (not during `rebuild`, which re-embeds every
    file after a model change and commits once). `files` restricts the run to those files of new_music/. A file
    that fails stays where it is and is named in the report. Holds the library lock throughout, and first
    finishes a commit that a crash left half done. With a `tagger` (tags.Tagger), every commit also gives each
    track without current automatic tags its tags, from its stored vector (no audio is read for that), and a run
    with nothing else to do commits them when some are missing or stale. Every track added gets its tempo and
    beats (`bpm`, `beats`: audio.read_rhythm) from the audio decoded to embed it; with `fill_tempo`, a listed
    track without them (added before they were stored, or whose beats a weaker tracker found:
    beats.needs_tracking) has its file decoded again for them alone, never embedded, after the new files, in the
    same pipeline and commits. `read_file` replaces read_track as the reader (same
    arguments); it may return a shards.EmbeddedTrack, a file embedded elsewhere, whose vectors are committed as
    they are (how cluster.py commits what a Ray cluster embedded). `lock`: the library lock (storage.acquire_lock)
    when the caller already holds it; the build then runs under it and leaves it held.

    The registered sources are read too (unless `files` is given): every folder's files (sources.py), and every
    Subsonic server's songs (server_sources.py), through `servers` (a remote.ServerConnections; default: one of
    its own without a terminal prompt). A server that cannot be listed stops the build before any change
    (SubsonicError); a song that cannot be downloaded or decoded is a warning, tried again by the next build.
    """
    held = lock
    lock = held or acquire_lock(paths.lock, lock_timeout)
    own_servers = servers is None
    servers = servers or ServerConnections()
    try:
        report = BuildReport(warnings=recover_library(paths))
        build = _Build(clap, paths, report, rebuild, commit_every_s, tagger, fill_tempo, read_file or read_track,
                       servers)
        build.read_and_embed(files, progress)
        if (report.added or report.tempo_read) and not beatnet.available() and not floor_chosen():
            report.warnings.append(f"Warning: BeatNet's weights are not installed ({beatnet.INSTALL}): the beats "
                                   "were found by librosa's less accurate tracker, and a build with them finds them "
                                   "again")
        build.finish()
        build.cache.save(build.sources)
        report.tracks = len(build.db)
    finally:
        if own_servers:
            servers.close()
        if held is None:
            lock.release()
    return report


class _Build:
    """One run of build_library, under the library lock: the database it builds on, the records it changes, and
    what it has embedded and moved since its last commit. The steps: read_and_embed (each file: read → embed, or
    a tempo read), commit (when due, and at the end), finish."""

    def __init__(self, clap, paths: LibraryPaths, report: BuildReport, rebuild: bool, commit_every_s: float,
                 tagger, fill_tempo: bool, read_file, servers: ServerConnections):
        self.clap, self.paths, self.report, self.rebuild = clap, paths, report, rebuild
        self.servers, self.listed = servers, {}  # listed: each server's songs, by its address (when read)
        self.commit_every_s, self.tagger, self.read_file = commit_every_s, tagger, read_file
        self.sample_rate = clap.runtime.sampling_rate
        self.window_s = clap.runtime.window_samples / self.sample_rate
        old, self.db = database_to_build_on(paths, clap.name, rebuild)
        # What the old database knew about a file is kept on rebuild (a title fixed by hand, say).
        self.previous = {t.get("sha256"): t for t in old.tracks}
        self.tracks = [dict(t) for t in self.db.tracks]  # copies: a relocated track's record changes
        self.known = {t.get("sha256"): t for t in self.tracks}
        self.moves, self.new_rows, self.new_segments, self.added = [], [], [], []
        # A move the last commit could not make (save_database carries it): its file is the listed track's, not
        # one to add, and its target is taken.
        pending = pending_moves(paths)
        self.waiting = {source for source, _ in pending}
        self.taken = {target for _, target in pending}
        self.committed_at, self.committed_changes = time.monotonic(), 0
        # Folders indexed in place (sources.py): read, never written; a file --remove took out stays out.
        self.sources, self.cache = committed_sources(paths), ScanCache(paths)
        self.excluded = {sha for source in self.sources for sha in source.get("excluded", [])}
        # The listed tracks whose tempo is to be read, by their file (the same record objects as in `tracks`): those
        # without it, or whose beats a weaker tracker found.
        self.untimed = {paths.root / t["file_path"]: t for t in self.tracks if fill_tempo and needs_tracking(t)
                        and (paths.root / t["file_path"]).is_file()}

    def changes(self) -> int:
        return len(self.report.added) + len(self.report.relocated) + len(self.report.tempo_read)

    def read_and_embed(self, files: list[Path] | None, progress: bool) -> None:
        """Read every file to add (and every listed file whose tempo is to be read), decoding the next while the
        last is embedded, and take each in; commit when due."""
        from tqdm import tqdm

        if files is None:  # first: a server that cannot be listed stops the run before anything is read
            self.listed = list_server_songs(self.servers, self.sources)
        candidates = [path for path in pending_files(self.paths, self.db, files) if path not in self.waiting]
        if files is None:
            listed_paths = set(self.db.column("file_path"))
            candidates += source_candidates(self.sources, listed_paths, self.paths)
            candidates += new_songs(self.listed, listed_paths)
        for path, item in tqdm(_prefetch(self.read, candidates + list(self.untimed)),
                               total=len(candidates) + len(self.untimed),
                               desc="Embedding music" + (" and reading tempos" if self.untimed else ""), unit="file",
                               file=sys.stderr, disable=not progress or None):
            if path in self.untimed:
                self.take_tempo(self.untimed[path], item)
            elif isinstance(path, ServerSong):
                self.take_song(path, item)
            elif isinstance(item, Exception):
                self.report.failed.append((path, str(item)))
            elif item.sha256 in self.excluded and source_of(path, self.sources):
                continue  # taken out by --remove: it stays out until --restore
            elif item.sha256 in self.known:
                found_again(self.known[item.sha256], path, self.paths, self.report, self.moves, self.taken,
                             self.sources)
            else:
                self.add(path, item)

    def read(self, path: Path):
        """A listed file's tempo (fill_tempo), or the file read to be embedded (DecodedTrack, EmbeddedTrack)."""
        if path in self.untimed:
            return read_rhythm(decode_audio(path, self.sample_rate), self.sample_rate)
        if isinstance(path, ServerSong):
            return read_song(self.servers, path, self.sample_rate, self.known.keys(), self.excluded, self.cache)
        source = source_of(path, self.sources)
        if source is not None:  # a source file is hashed only when it changed (ScanCache), never decoded twice
            sha256 = self.cache.sha256(path)
            if sha256 in self.known or sha256 in self.excluded:
                return KnownFile(source=path, sha256=sha256)
        folder = (Path(source["path"]) if source else self.paths.new_music if path.is_relative_to(self.paths.new_music)
                  else self.paths.processed_music)
        return self.read_file(path, folder, self.sample_rate, self.known.keys())

    def take_tempo(self, record: dict, item) -> None:
        """A listed track's tempo and beats read (audio.read_rhythm; or the error reading them), its record
        changed."""
        if isinstance(item, Exception):  # the track stays as it is, without a tempo; the next run tries again
            self.report.warnings.append(f"Warning: cannot read the tempo of {record['file_path']}: {item}")
            return
        record.update(item)
        self.report.tempo_read.append(record)
        self.commit_if_due()

    def take_song(self, song: ServerSong, item) -> None:
        """A server's song read: a warning when it could not be (the next build tries again), left out when --remove
        took it out, a duplicate or a song that came back under a new id when its content is known, else added."""
        if isinstance(item, Exception):
            self.report.warnings.append(f"Warning: {song.address}: cannot add the song {song.song.title!r} "
                                        f"(id {song.song.id}): {item}; the next run tries again")
        elif item.sha256 in self.excluded:
            return
        elif item.sha256 in self.known:
            record, old = self.known[item.sha256], self.known[item.sha256]["file_path"]
            if follow_song(record, song, self.listed):
                self.report.relocated.append((old, record["file_path"]))
            else:
                self.report.duplicates.append((song.file_path, old))
        else:
            self.add(song, item)

    def add(self, path: Path | ServerSong, item: DecodedTrack | EmbeddedTrack) -> None:
        """Embed a file whose content is new (unless it comes embedded) and add its record, with its move."""
        paths, report = self.paths, self.report
        server = isinstance(path, ServerSong)
        final = path if server or not path.is_relative_to(paths.new_music) else destination(path, paths, self.taken)
        obstacle = move_obstacle(path, final) if final != path else None
        if obstacle is not None:  # before embedding: the file could not go where the commit would say
            report.failed.append((path, f"cannot move it to {final}: {obstacle}"))
            return
        try:
            vector, segments, last_window_start_s = (
                (item.vector, item.segments, item.last_window_start_s) if isinstance(item, EmbeddedTrack)
                else embed_track(self.clap, item.audio))
        except Exception as e:  # one bad file must not cost the others
            report.failed.append((path, f"cannot embed {path.name}: {e}"))
            return
        if final != path:
            self.moves.append((path, final))
        record = _new_record(item, path.file_path if server else library_path(final, paths), len(segments),
                             last_window_start_s, self.previous.get(item.sha256),
                             getattr(item, "embedded_by", self.clap.embedded_by))
        if server:
            server_record(record, path)
        else:
            self.taken.add(final)
            if (source := source_of(final, self.sources)) is not None:
                record["source"] = source["path"]
        self.known[item.sha256] = record
        self.new_rows.append(vector)
        self.new_segments.append(segments)
        self.added.append(record)
        report.added.append(record)
        self.commit_if_due()

    def commit_if_due(self) -> None:
        if not self.rebuild and time.monotonic() - self.committed_at >= self.commit_every_s:
            self.commit(list(range(len(self.tracks))))  # tracks whose file is gone are dropped at the end only

    def commit(self, keep: list[int]) -> None:
        """Commit the tracks kept, the ones added since the last commit and the moves that go with them."""
        self.db = compose_database(self.db, [self.tracks[i] for i in keep], keep, self.added, self.new_rows,
                                   self.new_segments, self.clap.name, self.window_s)
        if self.tagger is not None:
            stale = [i for i, t in enumerate(self.db.tracks) if self.tagger.stale(t)]
            for i, tags in zip(stale, self.tagger.tag(self.db.vectors[stale])):
                self.db.tracks[i]["auto_tags"] = tags
        self.report.warnings.extend(save_database(self.db, self.paths, self.sample_rate, self.moves,
                                                  self.sources))
        self.tracks = self.db.tracks
        for pending in (self.moves, self.added, self.new_rows, self.new_segments):
            pending.clear()
        self.committed_at, self.committed_changes = time.monotonic(), self.changes()

    def finish(self) -> None:
        """The last commit: what is not committed yet, and the removal of the tracks whose file is gone; or, with
        nothing to commit, the moves of files a crash left unmoved."""
        keep = tracks_still_there(self.tracks, self.paths, self.taken, self.report, self.sources,
                                   songs_still_there(self.tracks, self.listed))
        uncommitted = self.changes() > self.committed_changes
        untagged = self.tagger is not None and any(self.tagger.stale(self.tracks[i]) for i in keep)
        if uncommitted or len(keep) < len(self.tracks) or self.rebuild or untagged:
            self.commit(keep)
        else:  # only files of a commit that a crash stopped before its moves: the database already lists them
            for source, target in self.moves:
                move_file(source, target)
                remove_empty_folders(source.parent, self.paths.new_music)


def database_to_build_on(paths: LibraryPaths, clap_name: str, rebuild: bool) -> tuple[Database, Database]:
    """(the committed library, the database a build starts from): the committed one, or an empty one for `rebuild`
    or an empty library. A database of another checkpoint is refused (check_clap_model: vectors of two checkpoints
    never mix); a broken one raises DatabaseError, except for `rebuild`, which is what it is for (the music in
    processed_music/ is all it needs). Call under the library lock, after recover_library."""
    try:
        old = load_database(paths)
    except DatabaseError:
        if not rebuild:
            raise
        old = empty_database(paths.root)
    if rebuild or len(old) == 0:
        return old, empty_database(paths.root, clap_name)
    check_clap_model(old.clap_model, clap_name)
    return old, old


def _new_record(track: DecodedTrack | EmbeddedTrack, file_path: str, segment_count: int,
                last_window_start_s: float, previous: dict | None, embedded_by: str) -> dict:
    """The metadata of a newly embedded track (segment_offset is set when the database is composed).

    `embedded_by` is the backend and precision that made its vectors ("onnx-fp32", "torch-bf16"...): vectors of
    one checkpoint are interchangeable across them (the fidelity gate holds every window within cosine 0.999 of
    torch fp32), so a library mixes them freely; the label says how each track was embedded.

    `from_file` keeps what the file's tags, name and folder gave, so a later change can tell a value fixed by hand
    (kept on --rebuild) from one that follows the file. `bpm` is the tempo read from the decoded audio (None when
    no beat stands out).
    """
    record = {
        "id": track.sha256[:16],
        **track.tags,
        "file_path": file_path,
        "duration_s": round(track.duration_s, 3),
        "sha256": track.sha256,
        "segment_offset": 0,
        "segment_count": segment_count,
        "last_window_start_s": round(last_window_start_s, 3),
        "embedded_by": embedded_by,
        "bpm": track.bpm,
        "beats": track.beats,
        "from_file": dict(track.tags),
    }
    for key in TAG_KEYS:
        if previous and key in previous and previous[key] != (previous.get("from_file") or {}).get(key, object()):
            record[key] = previous[key]
    return record
