"""ONNX Runtime sessions: how every exported graph is opened (threads, optimisation, memory arena). The bottom of
the model runtimes: onnx_blip and onnx_clap import it, and it imports nothing of the package."""
from __future__ import annotations

import os
from pathlib import Path

THREADS_ENV = "MUSIC_MOOD_THREADS"


def onnx_threads() -> int | None:
    """ONNX Runtime's intra-op threads: $MUSIC_MOOD_THREADS, else None (ONNX Runtime's default: one per physical
    core, which the benchmarks measured as the fastest for the decode loop; see RESULTS.md)."""
    value = os.environ.get(THREADS_ENV)
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def onnx_session(path: Path | bytes, threads: int | None = None, arena: bool = False):
    """An ONNX Runtime CPU session for one exported graph (its file, or the serialised graph): every graph
    optimisation, `threads` intra-op threads (None: ORT's default, one per physical core); `arena`: keep ORT's own
    memory arena (see below)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads would otherwise spin after each run, taking a core from the next session (vision, cross,
    # decoder and CLAP run one after another on 2 cores): without spinning a decoder step took 28 ms instead of
    # 34 and the vision tower 1.61 s instead of 1.68 (2 threads, full-size, int8 decoder).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Without ORT's own arena, activations go back to malloc after each run (and to the OS with the app's
    # malloc_trim): 58 MB less resident for BLIP + CLAP text after warm-up, at the same speed (full-size, 2 cores).
    # The audio tower keeps it: its batches' large activations cost 8 % more time when allocated afresh each run.
    options.enable_cpu_mem_arena = arena
    graph = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
