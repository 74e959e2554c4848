"""Memory a long-running process gives back: freed blocks returned to the OS after each request, garbage cycles
collected only when memory has grown, and the loaded models' objects kept out of later collections. Below the
model runtimes: torch_runtime calls it after quantising, the server after loading and after every request."""
from __future__ import annotations

import os


def current_rss_bytes() -> int:
    """This process's resident memory in bytes (Linux /proc/self/statm; 0 where there is none, so nothing ever
    looks grown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _malloc_trim() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


class MemoryReleaser:
    """Hands memory freed inside the process back to the OS after each request, and collects garbage cycles only
    when memory has grown.

    glibc keeps freed blocks (a query's activations, replaced weights) in its arenas, so a long-running process's
    RSS only grows unless malloc_trim (2 ms) gives them back: that runs every time. A full gc.collect() scans every
    object the process holds (~487 000 with torch and transformers loaded: 0.29-0.33 s a request on a 2-core Xeon,
    issue 21), and a query leaves almost no cycles (refcounting frees its arrays at once): it runs only when RSS,
    after the trim, is above the RSS measured after the last collection by `growth_bytes`. `read_rss` reads the
    RSS in bytes (a parameter, so a test can give its own readings).
    """

    def __init__(self, growth_bytes: int = 64 * 2**20, read_rss=current_rss_bytes):
        self.growth_bytes, self.read_rss = growth_bytes, read_rss
        self.baseline: int | None = None  # RSS after the last collection; None: never collected
        self.collections = 0

    def collect(self) -> None:
        """A full collection and trim now; the RSS after it is the new baseline."""
        import gc

        gc.collect()
        _malloc_trim()
        self.collections += 1
        self.baseline = self.read_rss()

    def release(self) -> bool:
        """Trim; then collect if RSS has grown by growth_bytes since the last collection. True if it collected."""
        _malloc_trim()
        if self.baseline is not None and self.read_rss() <= self.baseline + self.growth_bytes:
            return False
        self.collect()
        return True


_releaser = MemoryReleaser()


def release_freed_memory() -> bool:
    """Give freed memory back to the OS (malloc_trim) and collect garbage cycles only when RSS has grown since the
    last collection (MemoryReleaser); called after every request and after loading. True if it collected."""
    return _releaser.release()


def freeze_loaded_objects() -> None:
    """Once the models are loaded (a server's start-up): collect, then move every object alive now into the
    garbage collector's permanent generation (gc.freeze), so later collections, automatic or not, never scan the
    models' and libraries' hundreds of thousands of objects again; RSS now is the baseline release_freed_memory
    compares with."""
    import gc

    _releaser.collect()
    gc.freeze()
