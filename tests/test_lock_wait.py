"""A writer that waits for the library lock says whom it waits for (issue 20, part 3), instead of waiting in
silence: the holder notes its PID and command beside the lock while it holds it."""
from __future__ import annotations

import subprocess
import sys
import time

from music_mood.library import LibraryPaths, load_database
from music_mood.storage import holder_path
from tests.conftest import ROOT

HOLD = f"""
import sys, select
sys.path.insert(0, {str(ROOT)!r})
from music_mood.library import LibraryPaths
from music_mood.storage import acquire_lock

lock = acquire_lock(LibraryPaths.at(sys.argv[1]).lock, timeout=5)
print("held", flush=True)
select.select([sys.stdin], [], [], 60)  # until the test closes stdin (a bound, so a silent waiter cannot hang it)
lock.release()
"""


def test_a_writer_waiting_for_the_lock_names_its_holder(library_copy, tmp_path):
    script = tmp_path / "hold_lock.py"
    script.write_text(HOLD)
    holder = subprocess.Popen([sys.executable, str(script), str(library_copy)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    track = load_database(LibraryPaths.at(library_copy)).tracks[1]
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        writer = subprocess.Popen([sys.executable, str(ROOT / "music_to_vector.py"), "--library", str(library_copy),
                                   "--set-mood", track["id"], "sleepy"], stdout=subprocess.PIPE, stderr=stderr)
    while writer.poll() is None and "Waiting" not in err.read_text():
        time.sleep(0.05)
    waiting = err.read_text()
    holder.stdin.close()  # the holder releases the lock: the writer goes on
    assert holder.wait() == 0
    assert writer.wait() == 0, err.read_text()
    assert waiting.strip() == f"Waiting for the library lock held by PID {holder.pid} (hold_lock.py {library_copy})..."
    assert err.read_text() == waiting  # said once
    assert load_database(LibraryPaths.at(library_copy)).tracks[1]["mood"] == "sleepy"
    assert not holder_path(LibraryPaths.at(library_copy).lock).exists()  # each holder removes its note
