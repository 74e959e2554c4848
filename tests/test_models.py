"""Model loading by hub id: from the Hugging Face cache without touching the network, else a download."""
from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
LOAD = ("from music_mood import engines, models; m = models.load_clap_text({name!r}, engines.ModelChoice('fp32')); "
        "print(m.model.config.projection_dim)")


@pytest.fixture
def fake_hub():
    """A local stand-in for huggingface.co that answers 404 to everything and records what was asked."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            asked.append(f"{self.command} {self.path}")
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()


def _cache_as_hub_model(checkpoint: str, hf_home, repo: str) -> None:
    """Put a saved checkpoint into the Hugging Face cache as if `hf download repo` had fetched it."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(checkpoint, folder / "snapshots" / SNAPSHOT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(SNAPSHOT)


def _load_online(name: str, hf_home, endpoint: str) -> subprocess.CompletedProcess:
    """Load a model in a new process with the hub reachable (at `endpoint`) and HF_HUB_OFFLINE unset.

    A new process on purpose: huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, into
    huggingface_hub.constants when it is imported, and this process imported it before any test set them.
    """
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint)
    return subprocess.run([sys.executable, "-c", LOAD.format(name=name)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_cached_model_loads_without_asking_the_hub(checkpoints, tmp_path, fake_hub):
    endpoint, asked = fake_hub
    _cache_as_hub_model(checkpoints["clap"], tmp_path / "hf", "tiny-org/tiny-clap")
    done = _load_online("tiny-org/tiny-clap", tmp_path / "hf", endpoint)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
    # No update check: a cached model loads the same with or without a network. (huggingface_hub's own
    # best-effort fetch of its agent registry, made whenever it builds request headers, is not about the model.)
    assert [request for request in asked if "tiny-org" in request] == []
    assert "Downloading" not in done.stderr


def test_model_not_in_the_cache_is_downloaded_with_a_notice(tmp_path, fake_hub):
    endpoint, asked = fake_hub
    done = _load_online("tiny-org/not-cached", tmp_path / "hf", endpoint)
    assert any("/tiny-org/not-cached/" in request for request in asked)  # it did go to the hub for it
    assert done.returncode == 1
    assert "Downloading the CLAP model tiny-org/not-cached from the Hugging Face Hub" in done.stderr
    assert "ModelLoadError: cannot load the CLAP model 'tiny-org/not-cached'" in done.stderr


def test_int_argument_accepts_its_range_and_says_what_is_wrong():
    import argparse
    import re

    from music_mood.cli import int_argument

    topk, port = int_argument(1), int_argument(1, 65535, "a port number")
    assert topk("3") == 3 and topk("1000") == 1000 and port("1") == 1 and port("65535") == 65535
    for parse, text, message in [(topk, "0", "0 is less than 1"), (topk, "x", "'x' is not a whole number"),
                                 (port, "0", "0 is not between 1 and 65535"),
                                 (port, "65536", "65536 is not between 1 and 65535"),
                                 (port, "abc", "'abc' is not a port number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            parse(text)


def test_memory_releaser_collects_only_when_rss_has_grown():
    import gc
    import weakref

    from music_mood.memory import MemoryReleaser

    class Node:
        pass

    def cycle():  # garbage only a full collection frees, watched through a weak reference
        node = Node()
        node.self = node
        return weakref.ref(node)

    mb = 2**20
    readings = iter([500 * mb,  # after the first collection: the baseline
                     540 * mb,  # 40 MB more: under the 64 MB threshold, no collection
                     565 * mb,  # 65 MB more: collected...
                     520 * mb,  # ...and this is the new baseline
                     580 * mb])  # 60 MB above the new baseline: not collected
    releaser = MemoryReleaser(growth_bytes=64 * mb, read_rss=lambda: next(readings))
    gc.disable()  # no automatic collection may free the cycle in between
    try:
        assert releaser.release() is True and releaser.baseline == 500 * mb  # never collected yet: collects
        garbage = cycle()
        assert releaser.release() is False and garbage() is not None
        assert releaser.release() is True and garbage() is None and releaser.baseline == 520 * mb
        assert releaser.release() is False and releaser.collections == 2
    finally:
        gc.enable()
