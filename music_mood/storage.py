"""Crash-safe files: atomic replace, new files written whole before anything names them, moves that are never
half done, the library lock, and the crash points at which the crash tests kill the writer.

Every write, fsync, rename and move of the library goes through a function here, and each calls crash_point()
just before its system call, so a test can kill the process at each of them in turn (MUSIC_MOOD_CRASH_AT=N
kills at the N-th; MUSIC_MOOD_CRASH_LOG=FILE names every point passed, one line each, to count them first).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CRASH_AT_ENV = "MUSIC_MOOD_CRASH_AT"
CRASH_LOG_ENV = "MUSIC_MOOD_CRASH_LOG"
_crash_points_passed = 0


class LibraryBusyError(RuntimeError):
    """Another process holds the library lock."""


class DiskFullError(OSError):
    """A change ran out of disk space before its commit point, so nothing was changed (the message says how much
    is free)."""


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write refused for want of space (a full disk, or the user's quota)."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(folder: Path) -> DiskFullError:
    """The one-line error for a change that a full disk stopped before its commit, with the space left."""
    free = shutil.disk_usage(folder).free
    return DiskFullError(f"the disk is full ({free / 1e6:.1f} MB free in {folder}); nothing was changed")


def crash_point(what: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at the N-th point when MUSIC_MOOD_CRASH_AT=N.

    Costs one environment look-up when neither variable is set (the normal case).
    """
    global _crash_points_passed
    kill_at, log = os.environ.get(CRASH_AT_ENV), os.environ.get(CRASH_LOG_ENV)
    if kill_at is None and log is None:
        return
    _crash_points_passed += 1
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{_crash_points_passed}\t{what}\n")
    if kill_at is not None and _crash_points_passed == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make the renames and new names in `folder` durable (a no-op where folders cannot be opened: Windows)."""
    if os.name != "posix":
        return
    crash_point(f"fsync {folder.name}/")
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_and_sync(f, path: Path, write, durable: bool = True) -> None:
    crash_point(f"write {path.name}")
    write(f)
    f.flush()
    if durable:
        crash_point(f"fsync {path.name}")
        os.fsync(f.fileno())


def write_atomically(path: Path, write, durable: bool = True, mode: int | None = None) -> None:
    """Replace `path` with what `write(f)` writes: a temp file in the same folder, fsync, then os.replace.

    Readers see the old file or the new one, never half of one. The file gets the permissions the umask gives a
    new file (mkstemp's 0600 would hide a shared library from its other users), or `mode`, set before the rename
    (the temp file is mkstemp's 0600 from the start, so a secret given 0600 is never readable by others).
    `durable=False` skips both fsyncs: still whole after a crash of the process, but a power loss may leave the new
    name on a torn file, so only for files whose reader checks them and can do without them (a build's staged
    shards, see shards.py).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_and_sync(f, path, write, durable)
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        crash_point(f"rename {path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def replace_together(targets: list[Path]) -> Iterator[list[Path]]:
    """Temporary files to write by path (one beside each target, in the same folder, so a rename can replace it),
    renamed over their targets only when the block ends without an exception: each is fsynced, renamed, and its
    folder fsynced. On any exception (KeyboardInterrupt included) every temporary file is removed and no target is
    touched. For writers that need a path, not a file object (FFmpeg's muxers seek, and reopen an MP4 to move its
    index to the front).

    A folder that does not exist or cannot be written raises an OSError of the same kind naming the target, before
    any work is done; so does a target that is a folder.
    """
    temps: list[Path] = []
    try:
        for target in targets:
            if target.is_dir():
                raise IsADirectoryError(f"cannot write {target}: it is a folder")
            try:
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            except OSError as e:
                reason = "the folder does not exist" if isinstance(e, FileNotFoundError) else e.strerror or str(e)
                raise type(e)(f"cannot write {target}: {reason}") from e
            os.close(fd)
            temps.append(Path(tmp))
        yield list(temps)
        for tmp, target in zip(temps, targets):
            with open(tmp, "rb+") as f:
                crash_point(f"fsync {target.name}")
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            rename(tmp, target)
        for folder in dict.fromkeys(target.parent for target in targets):
            fsync_dir(folder)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` whole or not at all (write_atomically): a crash midway never leaves a torn copy
    in new_music/ that the next run would report as a broken file."""
    with open(source, "rb") as src:
        write_atomically(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))


def write_new_file(path: Path, write) -> None:
    """Write a file that nothing names yet (a staged data file), whole and fsynced; it must not exist already.

    A crash midway leaves a torn file that no committed state refers to; cleaning such files is the
    committer's job (see library.finish_commit).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_and_sync(f, path, write)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_new_file_at(path: Path, make) -> None:
    """write_new_file for a writer that needs a path, not a file object (SQLite): `make(path)` creates the file;
    then it is fsynced whole. A crash midway leaves a torn file that nothing names, as write_new_file does."""
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "will not write over an existing file", str(path))
    try:
        crash_point(f"write {path.name}")
        make(path)
        with open(path, "rb+") as f:
            crash_point(f"fsync {path.name}")
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def rename(source: Path, target: Path) -> None:
    """os.replace with a crash point: atomic on one file system."""
    crash_point(f"rename {source.name} -> {target.name}")
    os.replace(source, target)


def remove(path: Path) -> None:
    """Remove one of our own files (a superseded staged file, a temp file left by a crash)."""
    crash_point(f"remove {path.name}")
    path.unlink(missing_ok=True)


def move_file(source: Path, target: Path) -> None:
    """Move a user's file to `target`, which must not exist; at no moment is the file in neither place.

    On one file system this is a rename (atomic). A symbolic link is moved as a link to the same absolute
    target, so a relative link keeps pointing at its file from its new folder. Across file systems the file is
    copied to a temp name beside `target`, fsynced and renamed into place before the source is removed: a crash
    leaves the file in both places, never in none, and the next run finishes the move.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "will not move over an existing file", str(target))
    if source.is_symlink():
        tmp = target.with_name(f".{target.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.realpath(source), tmp)
        crash_point(f"move {source.name}")
        os.replace(tmp, target)
        fsync_dir(target.parent)
        crash_point(f"remove link {source.name}")
        source.unlink()
        fsync_dir(source.parent)
        return
    crash_point(f"move {source.name}")
    try:
        os.rename(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = target.with_name(f".{target.name}.move.tmp")
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            _write_and_sync(dst, target, lambda f: shutil.copyfileobj(src, f))
        shutil.copystat(source, tmp)
        rename(tmp, target)
        fsync_dir(target.parent)
        crash_point(f"remove moved {source.name}")
        source.unlink()
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def move_obstacle(source: Path, target: Path) -> str | None:
    """What would stop move_file(source, target) on the destination's side, in words, or None: the target taken, a
    file where a folder of its path must be, a folder that cannot be written (or the source's, which a move writes
    too). Checked before a commit names the move, so a move that cannot be made is refused, not left pending."""
    if os.path.lexists(target):
        return f"{target} exists"
    folder = target.parent
    while not os.path.lexists(folder):
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    for where in (folder, source.parent):
        if not os.access(where, os.W_OK | os.X_OK):
            return f"the folder {where} cannot be written"
    return None


LOCK_NOTICE_S = 1.0  # a writer that has waited this long for the lock says whom it waits for


class LibraryLock:
    """The library lock, held: a filelock.FileLock, and beside it a note of who holds it (holder_path: this
    process's PID and command line), so a process waiting for it can say whom it waits for. release() removes
    the note, then releases the lock."""

    def __init__(self, lock, note: Path | None):
        self._lock, self._note = lock, note

    def release(self) -> None:
        try:
            if self._note is not None:  # before the lock goes: the next holder writes its own
                with contextlib.suppress(OSError):
                    self._note.unlink(missing_ok=True)
                self._note = None
        finally:
            self._lock.release()


def holder_path(lock: Path) -> Path:
    """Where the holder of `lock` notes its PID and command (removed when it releases the lock)."""
    return lock.with_name(lock.name + ".holder")


def lock_holder(lock: Path) -> str | None:
    """Who holds `lock`, as "PID N (its command)", when its note names a live process; else None (a holder that
    wrote none, or one killed before removing it)."""
    try:
        note = json.loads(holder_path(lock).read_text(encoding="utf-8"))
        pid, command = int(note["pid"]), str(note["command"])
        os.kill(pid, 0)  # raises ProcessLookupError when no such process lives
    except PermissionError:  # alive, another user's
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"PID {pid} ({command})"


def _note_holder(lock: Path) -> Path | None:
    """Note this process as the holder of `lock`; best effort (a full disk or a read-only folder must not stop the
    change: the note only serves a waiter's message). Written in place, with no crash point and no temp file: a
    waiter that reads it half written names no one, and a crash leaves only a note naming a dead process."""
    note = holder_path(lock)
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    try:
        note.write_text(json.dumps({"pid": os.getpid(), "command": command}), encoding="utf-8")
    except OSError:
        with contextlib.suppress(OSError):
            note.unlink(missing_ok=True)
        return None
    return note


def acquire_lock(path: Path, timeout: float, holder: str = "another music_to_vector run",
                 notice_after: float = LOCK_NOTICE_S) -> LibraryLock:
    """The library's lock, acquired; LibraryBusyError after `timeout` seconds. A wait longer than `notice_after`
    seconds is said once on stderr, naming the holder (lock_holder) when it is known, so a writer never waits in
    silence. The holder notes itself beside the lock (holder_path) while it holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        try:
            lock.acquire(timeout=min(timeout, notice_after))
        except Timeout:
            if timeout <= notice_after:
                raise
            who = lock_holder(path) or "another process"
            print(f"Waiting for the library lock held by {who}...", file=sys.stderr, flush=True)
            lock.acquire(timeout=timeout - notice_after)
    except Timeout as e:
        raise LibraryBusyError(f"{lock_holder(path) or holder} holds {path}; wait for it to finish") from e
    return LibraryLock(lock, _note_holder(path))


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to (not including) `top` while they are empty (after moving files out)."""
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:  # not empty: a file the run could not add is still there
            return
        folder = folder.parent
