"""Scripts run many times over, cheaply: each run a child forked from a server that imported the package once.

The crash tests start the library builder dozens of times, and a new interpreter spends seconds importing what
the builder needs before its first write. Here multiprocessing's fork server imports it once and runs nothing:
no model is loaded there, so no ONNX Runtime or torch thread pool exists for a fork to leave behind (OpenBLAS,
started by NumPy's import, restarts its own threads in a child). Every run is a fresh child forked from it, which
takes its own environment, working directory and output files and runs the script's main(argv) as
`python script.py ...` would: its models loaded afresh, its exit code the process's, killed by a signal as a
process is. The test process itself is never forked (its models' thread pools would not follow).
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

# What the builder imports before it first writes: the fork server imports these once (librosa, for the tempo
# of each track read, alone takes seconds; librosa.beat, for its beats, compiles its numba kernels on import, 1.1 s;
# onnx makes BeatNet's graph).
PRELOAD = ["music_to_vector", "music_mood.build", "music_mood.models", "music_mood.exports", "music_mood.onnx_clap",
           "music_mood.tags", "music_mood.beatnet", "onnxruntime", "onnx", "av", "soundfile", "librosa",
           "librosa.feature", "librosa.onset", "librosa.beat", "threadpoolctl"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _run_main(module: str, argv: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str,
              stopped: bool) -> None:
    """In the forked child: become the process `python module.py argv...` with `env` in `cwd` would be."""
    os.environ.clear()
    os.environ.update(env)
    # multiprocessing's default in a new process, not the fork server it came from (with which a lock the child
    # makes, tqdm's, would be left to the parent's resource tracker to clean up after a kill, with a warning).
    multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    if stopped:
        os.kill(os.getpid(), signal.SIGSTOP)  # until a tracer has attached and sends SIGCONT
    code = importlib.import_module(module).main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)  # multiprocessing makes it the exit code, as `raise SystemExit(main())` does


def start(module: str, *args, env: dict[str, str], cwd: Path, stdout: Path, stderr: Path, stopped: bool = False):
    """A forked run of `module`'s main(args) (module: "music_to_vector"), started; a multiprocessing.Process
    (its pid, kill(), is_alive(), join(), exitcode: the code, or -N when signal N ended it).

    `stopped`: the child stops itself (SIGSTOP) just before main, for a tracer to attach (see attach), and runs
    on at SIGCONT."""
    process = _context.Process(target=_run_main, args=(module, [str(a) for a in args], dict(env), str(cwd),
                                                       str(stdout), str(stderr), stopped), daemon=True)
    process.start()
    return process


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def attach(process, tracer: list[str], timeout: float = 60):
    """Run `tracer` (a command ending in `-p`, such as strace's) on a child started with stopped=True, once it
    has stopped; let the child go on once the tracer holds it. Returns the tracer's subprocess.Popen."""
    import subprocess

    deadline = time.monotonic() + timeout
    while not _status(process.pid)["State"].startswith("T"):
        assert process.exitcode is None and time.monotonic() < deadline, "the child did not stop before main"
        time.sleep(0.005)
    traced = subprocess.Popen([*tracer, str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while _status(process.pid)["TracerPid"] == "0":
        assert traced.poll() is None and time.monotonic() < deadline, "the tracer did not attach"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGCONT)
    return traced


def wait(process) -> int:
    """The exit code of a run of start(), once it has ended (-N: signal N ended it)."""
    process.join()
    return process.exitcode


def run(module: str, *args, folder: Path, env_extra: dict | None = None, cwd: Path | None = None):
    """`python module.py args...` as run_cli runs it (this process's environment plus `env_extra`, in `cwd`, by
    default the source tree), as a forked child: a conftest.Result. Its output is kept in `folder`
    (<module>-stdout.txt, <module>-stderr.txt), overwritten by the next run there."""
    from tests.conftest import ROOT, Result

    out, err = folder / f"{module}-stdout.txt", folder / f"{module}-stderr.txt"
    process = start(module, *args, env={**os.environ, **(env_extra or {})}, cwd=cwd or ROOT, stdout=out, stderr=err)
    code = wait(process)
    return Result(code, out.read_text(errors="replace"), err.read_text(errors="replace"))
