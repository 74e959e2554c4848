"""The ONNX Runtime backend end to end on the tiny checkpoints: which backend runs, the export cache (made once,
found again, rebuilt when damaged), a cold start without torch, and results within the fidelity gate of torch's."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from music_mood import exports, models
from music_mood.engines import ModelChoice
from music_mood.images import open_image
from tests.conftest import ROOT


@pytest.fixture
def own_exports(tmp_path, monkeypatch):
    """This test's own, empty export folder (the run's shared one stays untouched), and fresh loaders."""
    (tmp_path / "cache" / "onnx").unlink()
    models._loaded.cache_clear()
    yield tmp_path / "cache" / "onnx"
    models._loaded.cache_clear()


# /proc/cpuinfo flags of each CPU kind, as much of them as the choice reads.
FLAGS = {"avx2": "fpu sse4_2 avx2 fma f16c", "avx512": "fpu avx2 fma avx512f avx512bw avx512_vnni",
         "avx512_bf16": "fpu avx2 fma avx512f avx512bw avx512_vnni avx512_bf16",
         "amx_bf16": "fpu avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"}


@pytest.mark.parametrize("cpu, gpu, precision, backend, expected", [
    ("avx512_bf16", False, "auto", "torch", ("torch", "bf16")),
    ("amx_bf16", False, "auto", "torch", ("torch", "bf16")),
    ("amx_bf16", False, "auto", "onnx", ("onnx", "int8")),
    ("avx2", True, "auto", "auto", ("torch", "bf16")),
    ("avx2", False, "fp32", "auto", ("torch", "fp32")),
    ("avx2", False, "int8", "auto", ("onnx", "int8")),
    ("avx2", False, "fp32", "onnx", ("onnx", "fp32")),
    ("avx2", False, "auto", "torch", ("torch", "fp32")),
    ("avx2", False, "int8", "torch", ("torch", "int8")),
])
def test_backend_follows_the_hardware_and_the_flags(cpu, gpu, precision, backend, expected):
    """A --backend or --precision the user gives, or a GPU, puts every stage on one engine, whatever the table says
    (test_engines.py tests the table)."""
    for stage in ("blip-vision", "blip-decoder", "clap-text", "clap-audio"):
        assert ModelChoice(precision, backend).engine(stage, flags=FLAGS[cpu], gpu=gpu) == expected


def test_bf16_on_onnx_runtime_is_a_clear_error(call_cli, checkpoints):
    import music_to_vector

    with pytest.raises(ValueError, match="bf16 runs on torch only"):
        ModelChoice("bf16", "onnx")
    done = call_cli(music_to_vector.main, "--clap-model", checkpoints["clap"], "--precision", "bf16", "--backend",
                    "onnx")
    assert done.returncode == 1 and "Error: bf16 runs on torch only" in done.stderr, done.stderr


def test_export_is_made_once_and_found_again(checkpoints, own_exports, capfd):
    first = models.load_clap_text(checkpoints["clap"], ModelChoice("fp32", "onnx"))
    assert "Preparing the CLAP text model for ONNX Runtime" in capfd.readouterr().err
    (folder,) = [p for p in own_exports.iterdir() if not p.name.startswith(".")]  # not the lock
    manifest = json.loads((folder / exports.MANIFEST).read_text())
    assert manifest["checkpoint"] == checkpoints["clap"] and manifest["precision"] == "fp32"
    assert all((folder / name).stat().st_size == size for name, size in manifest["files"].items())

    models._loaded.cache_clear()
    again = models.load_clap_text(checkpoints["clap"], ModelChoice("fp32", "onnx"))
    assert capfd.readouterr().err == ""  # nothing exported, nothing said
    text = ["a cat on a red blanket; calm, warm mood"]
    np.testing.assert_array_equal(first.runtime.embed_text(text), again.runtime.embed_text(text))
    assert again.backend == "onnx" and again.embedded_by == "onnx-fp32"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "manifest"])
def test_damaged_export_is_made_again_with_a_notice(checkpoints, own_exports, capfd, damage):
    text = ["a quiet lake at dawn; serene mood"]
    expected = models.load_clap_text(checkpoints["clap"], ModelChoice("fp32", "onnx")).runtime.embed_text(text)
    (folder,) = [p for p in own_exports.iterdir() if not p.name.startswith(".")]
    graph = max(folder.glob("*.onnx"), key=lambda p: p.stat().st_size)
    if damage == "truncated":  # a copy cut short
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif damage == "garbage":  # the right size, but not a model
        graph.write_bytes(b"\x07" * graph.stat().st_size)
    else:
        (folder / exports.MANIFEST).write_text("{")
    capfd.readouterr()
    models._loaded.cache_clear()
    again = models.load_clap_text(checkpoints["clap"], ModelChoice("fp32", "onnx"))
    err = capfd.readouterr().err
    assert "is damaged" in err and "exporting it again" in err, err
    np.testing.assert_allclose(again.runtime.embed_text(text), expected, atol=1e-6)
    assert exports._damage(folder) is None


def test_changed_checkpoint_gets_a_new_export(checkpoints, tmp_path):
    """The key follows the checkpoint's files: a rewritten weights file means another export."""
    import shutil

    copy = tmp_path / "clap-copy"
    shutil.copytree(checkpoints["clap"], copy)
    before = exports.export_path("clap-text", copy, "int8")
    assert exports.export_path("clap-text", copy, "int8") == before
    assert exports.export_path("clap-text", copy, "fp32") != before
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes, a new file: replaced, so possibly other weights
    assert exports.export_path("clap-text", copy, "int8") != before


COLD_RUN = """
import runpy, sys
sys.argv = ["recommend.py", *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "transformers", "huggingface_hub") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def _cold_recommend(*args, env_extra=None) -> subprocess.CompletedProcess:
    import os

    code = COLD_RUN.format(args=[str(a) for a in args], script=str(ROOT / "recommend.py"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **(env_extra or {})})


def test_cold_start_on_onnx_runtime_imports_neither_torch_nor_transformers(library_copy, checkpoints, photos):
    """The second run (exports cached) of the CLI on the default ONNX path gives results without torch."""
    args = (photos["coffee.png"], "--json", "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"],
            "--backend", "onnx", "--topk", "3")
    first = _cold_recommend(*args)  # exports whatever the run's shared folder does not hold yet
    assert first.returncode == 0, first.stderr
    second = _cold_recommend(*args)
    assert second.returncode == 0, second.stderr
    assert "HEAVY:\n" in second.stderr, second.stderr
    assert [line for line in second.stderr.splitlines() if line != "HEAVY:"] == []
    result = json.loads(second.stdout)
    assert len(result["results"]) == 3 and result["caption"] == json.loads(first.stdout)["caption"]


def test_hub_model_in_the_cache_runs_without_torch_or_the_hub_client(checkpoints, tmp_path, monkeypatch,
                                                                     isolated_library, sample_tracks, photos):
    """Models named by hub id, as a user names them: their snapshots in the Hugging Face cache are found without
    huggingface_hub (0.4 s of a cold start), exported once, and a later query imports none of the heavy modules."""
    from tests.conftest import put_in_new_music
    from tests.test_models import SNAPSHOT, _cache_as_hub_model

    hf_home = tmp_path / "hf"
    for kind in ("blip", "clap"):
        _cache_as_hub_model(checkpoints[kind], hf_home, f"tiny-org/tiny-{kind}")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    assert exports.checkpoint_folder("tiny-org/tiny-clap") == \
        hf_home / "hub" / "models--tiny-org--tiny-clap" / "snapshots" / SNAPSHOT
    assert exports.checkpoint_folder("tiny-org/not-downloaded") is None
    put_in_new_music(isolated_library, sample_tracks[:2])
    built = subprocess.run([sys.executable, str(ROOT / "music_to_vector.py"), "--clap-model", "tiny-org/tiny-clap",
                            "--backend", "onnx"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert built.returncode == 0, built.stderr
    args = (photos["chelsea.png"], "--json", "--blip-model", "tiny-org/tiny-blip", "--clap-model", "tiny-org/tiny-clap",
            "--backend", "onnx", "--topk", "2")
    assert _cold_recommend(*args).returncode == 0  # exports BLIP and the text tower
    again = _cold_recommend(*args)
    assert again.returncode == 0 and again.stderr == "HEAVY:\n", again.stderr
    assert len(json.loads(again.stdout)["results"]) == 2


def test_torch_backend_still_answers(call_cli, library_copy, checkpoints, photos):
    import recommend

    done = call_cli(recommend.main, photos["coffee.png"], "--json", "--blip-model", checkpoints["blip"],
                    "--clap-model", checkpoints["clap"], "--backend", "torch", "--topk", "2")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["results"]) == 2


def _relative_logit_error(fast, exact) -> float:
    """The fidelity gate's measure: RMS logit error over every position and token, over the fp32 logits' std."""
    return float(np.sqrt(np.mean((fast - exact) ** 2)) / exact.std())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_runtime_passes_the_fidelity_gate(checkpoints, blip, clap_text, clap_audio, photos, sample_tracks,
                                               precision):
    """Teacher-forced on the same tokens, the ONNX decoder's logits are within 0.06 of the logits' std of torch
    fp32's (RMS; tests/test_onnx_blip.py holds the largest error to that too, and the hidden state); the query
    vector for the same text and the audio windows' vectors within cosine 0.999."""
    from music_mood.audio import decode_audio
    from music_mood.embed import embed_windows, split_windows

    fast_blip = models.load_blip(checkpoints["blip"], ModelChoice(precision, "onnx")).runtime
    exact = blip.runtime
    image = open_image(photos["astronaut.png"])
    np.testing.assert_allclose(fast_blip.pixel_values(image), exact.pixel_values(image), atol=1e-5)
    pixels = exact.pixel_values(image)
    tokens = np.array([[exact.bos_token_id, *exact.encode("a photo of a woman in a space suit with a flag")]])
    fast_logits, _ = fast_blip.decode(tokens, fast_blip.cross_attention(fast_blip.image_features(pixels)))
    exact_logits, _ = exact.decode(tokens, exact.cross_attention(exact.image_features(pixels)))
    assert _relative_logit_error(fast_logits, exact_logits) <= (1e-3 if precision == "fp32" else 0.06)

    texts = ["a woman in a space suit; epic, triumphant, dramatic mood", "calm piano"]
    fast_text = models.load_clap_text(checkpoints["clap"], ModelChoice(precision, "onnx")).runtime.embed_text(texts)
    assert (np.sum(fast_text * clap_text.runtime.embed_text(texts), axis=1) >= 0.999).all()

    fast_audio = models.load_clap_audio(checkpoints["clap"], ModelChoice(precision, "onnx"))
    windows = split_windows(decode_audio(sample_tracks[0], fast_audio.runtime.sampling_rate),
                            fast_audio.runtime.window_samples)[0][:4]
    assert (np.sum(embed_windows(fast_audio, windows) * embed_windows(clap_audio, windows), axis=1) >= 0.999).all()


def test_library_records_which_backend_embedded_each_track(call_cli, isolated_library, checkpoints, sample_tracks):
    """Tracks embedded on ONNX Runtime join a library embedded on torch, and each record says which made it."""
    import music_to_vector
    from music_mood.library import LibraryPaths, load_database
    from tests.conftest import put_in_new_music

    put_in_new_music(isolated_library, sample_tracks[:1])
    assert call_cli(music_to_vector.main, "--clap-model", checkpoints["clap"], "--backend", "torch",
                    "--precision", "fp32").returncode == 0
    put_in_new_music(isolated_library, sample_tracks[1:2])
    done = call_cli(music_to_vector.main, "--clap-model", checkpoints["clap"], "--backend", "onnx")
    assert done.returncode == 0, done.stderr
    db = load_database(LibraryPaths.at(isolated_library))
    assert [t["embedded_by"] for t in db.tracks] == ["torch-fp32", "onnx-int8"]


def test_checkpoint_the_export_cannot_mirror_runs_on_torch(checkpoints, own_exports, tmp_path, capfd):
    """An audio feature extractor the numpy log-mel does not mirror (top_db set): torch runs it, and says so."""
    import shutil

    copy = tmp_path / "clap-top-db"
    shutil.copytree(checkpoints["clap"], copy)
    config = json.loads((copy / "processor_config.json").read_text())
    config["feature_extractor"]["top_db"] = 80
    (copy / "processor_config.json").write_text(json.dumps(config))
    clap = models.load_clap_audio(str(copy), ModelChoice("int8", "onnx"))
    assert clap.backend == "torch"
    err = capfd.readouterr().err
    assert f"The CLAP model {copy} runs on torch:" in err and "top_db" in err, err
    assert not [p for p in own_exports.iterdir() if not p.name.startswith(".")]  # no half export left
