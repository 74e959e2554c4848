"""ONNX exports of the checkpoints (and BLIP's vision tower alone as TorchScript, for a BLIP split
between torch and ONNX Runtime): made once per checkpoint from its transformers model, kept in the cache folder,
and loaded from there without transformers (and, but for that vision tower, without torch).

An export lives in cache_dir()/onnx/<part>-<precision>-<key>/, where the key hashes the checkpoint's files (name,
size and modification time of each; a hub snapshot's files are content-addressed blobs), the precision, the
export format and the versions of the libraries that make and run it. It is written into a temporary folder
that is renamed into place when complete, with export.json (every file and its size) written last; a folder
whose files do not match export.json, or that ONNX Runtime cannot load, is exported again with a notice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from music_mood.describe import cache_dir
from music_mood.ort import onnx_threads
from music_mood.storage import fsync_dir, write_atomically

EXPORT_FORMAT = 2  # bump when an exporter changes what it writes (2: BLIP's vision tower 8-bit in int8 exports)
MANIFEST = "export.json"
# Libraries whose versions change what an export holds or how it runs.
_VERSIONED = ("onnxruntime", "onnx", "onnx_ir", "torch", "transformers", "tokenizers")
_KINDS = {"blip": "BLIP", "blip-vision": "BLIP vision", "clap-text": "CLAP text", "clap-audio": "CLAP audio"}


class ExportError(RuntimeError):
    """A checkpoint cannot be run on ONNX Runtime (an architecture or feature extractor the export does not
    mirror); the torch backend runs it."""


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder, found as huggingface_hub finds it (its import alone costs a cold start
    0.4 s): $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def checkpoint_folder(name: str) -> Path | None:
    """The local folder of a checkpoint: `name` itself when it is a directory, else the snapshot of its main
    revision in the Hugging Face cache (models--ORG--NAME/refs/main names it); None when it is not downloaded yet.
    Never touches the network."""
    if os.path.isdir(name):
        return Path(name)
    repo = _hub_cache() / f"models--{name.replace('/', '--')}"
    try:
        snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:  # not downloaded (or not a repo id at all)
        return None
    return snapshot if (snapshot / "config.json").is_file() else None


def checkpoint_fingerprint(folder: Path) -> str:
    """A hash of a checkpoint folder's files (relative name, size, modification time): it changes when any file
    is replaced, and costs a few stat calls, so a cold start can find its export without reading the weights."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()  # follows a hub snapshot's symlinks to the blob
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def export_path(part: str, folder: Path, precision: str) -> Path:
    """Where the export of `part` ("blip", "clap-text", "clap-audio") of the checkpoint in `folder` is kept."""
    key = json.dumps({"checkpoint": checkpoint_fingerprint(folder), "part": part, "precision": precision,
                      "format": EXPORT_FORMAT, **{p: _version(p) for p in _VERSIONED}}, sort_keys=True)
    return cache_dir() / "onnx" / f"{part}-{precision}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _runtime(part: str):
    """(runtime class, export function) of a part; imports a runtime and its exporter only when asked. "blip-vision" is
    BLIP's vision tower alone on torch (TorchScript), for a BLIP whose decoder runs on ONNX Runtime."""
    if part == "blip-vision":
        from music_mood.torch_runtime import TorchVision, export_vision

        return TorchVision, export_vision
    if part == "blip":
        from music_mood.onnx_blip import OnnxBlip
        from music_mood.onnx_blip_export import export_blip

        return OnnxBlip, export_blip
    from music_mood.onnx_clap import OnnxClapAudio, OnnxClapText
    from music_mood.onnx_clap_export import export_clap_audio, export_clap_text

    return (OnnxClapText, export_clap_text) if part == "clap-text" else (OnnxClapAudio, export_clap_audio)


def _damage(target: Path) -> str | None:
    """Why the export folder `target` cannot be used as it is, or None when its files are what export.json lists."""
    try:
        manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
        for name, size in manifest["files"].items():
            if (target / name).stat().st_size != size:
                return f"{name} has {(target / name).stat().st_size} bytes, not {size}"
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    return None


def _write_export(part: str, name: str, precision: str, target: Path, transformers_model) -> None:
    """Export into a temporary folder next to `target`, then rename it into place (replacing a damaged one)."""
    _, export = _runtime(part)
    processor, model = transformers_model()
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a crashed export of this process id's: ours, never finished
    staging.mkdir(parents=True)
    try:
        export(model, processor, staging, precision)
    except ValueError as e:  # what the exporters raise for a model they do not mirror
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(str(e)) from e
    files = {}
    for path in sorted(p for p in staging.iterdir() if p.is_file()):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        files[path.name] = path.stat().st_size
    manifest = {"checkpoint": name, "part": part, "precision": precision, "files": files}
    write_atomically(staging / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    if target.exists():  # damaged: moved aside first, so the rename below replaces it in one step
        aside = target.with_name(f".{target.name}.damaged-{os.getpid()}")
        target.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    staging.rename(target)
    fsync_dir(target.parent)


def load_export(part: str, name: str, precision: str, transformers_model: Callable[[], tuple]):
    """The ONNX Runtime model of `part` of checkpoint `name` in `precision` ("fp32" or "int8"): loaded from its
    cached export, which is made first when there is none, or made again when it is damaged.

    `transformers_model()` gives (processor, model) in fp32 (models.load_transformers, which also downloads a
    checkpoint that is not in the cache yet); it is called only when an export has to be made.
    """
    from filelock import FileLock

    runtime_class, _ = _runtime(part)
    folder = checkpoint_folder(name)
    if folder is None:  # not downloaded yet: loading it through transformers downloads it
        loaded = transformers_model()
        transformers_model, folder = (lambda: loaded), checkpoint_folder(name)
        if folder is None:
            raise ExportError(f"{name} was loaded but its files cannot be found in the Hugging Face cache")
    target = export_path(part, folder, precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(f".{target.name}.lock")):  # two processes starting at once export it once
        if target.exists():
            reason = _damage(target)
            if reason is None:
                try:
                    return runtime_class.load(target, onnx_threads())
                except Exception as e:  # ONNX Runtime's errors for a corrupt graph have no common base class
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"The cached ONNX export of the {_KINDS[part]} model in {target} is damaged ({reason}); "
                  f"exporting it again.", file=sys.stderr)
        else:
            engine = "torch" if part == "blip-vision" else "ONNX Runtime"
            print(f"Preparing the {_KINDS[part]} model for {engine} ({precision}; once per checkpoint, "
                  f"about a minute)...", file=sys.stderr)
        _write_export(part, name, precision, target, transformers_model)
        return runtime_class.load(target, onnx_threads())
