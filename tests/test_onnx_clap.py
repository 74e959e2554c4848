"""CLAP on ONNX Runtime (music_mood.onnx_clap): the exported towers give torch's vectors, and running them needs
neither torch nor transformers. Tiny checkpoint, real tokenizer, real feature extractor, real music."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from music_mood import embed, torch_runtime
from music_mood.audio import decode_audio
from music_mood.onnx_clap import OnnxClapAudio, OnnxClapError, OnnxClapText, log_mel_features
from music_mood.onnx_clap_export import export_clap_audio, export_clap_text
from music_mood.query import embed_text
from tests.conftest import ROOT

TEXTS = ["a calm piano song",
         "a dog running on the beach at sunset; happy, warm, playful mood",
         "rain",
         # ~1000 tokens: truncated to the tokenizer's 512, </s> kept last
         "The sound of rain on a window at night, with a slow melancholic guitar. " * 60]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _export_both(export, loaded, tmp_path_factory, name: str) -> dict:
    """`loaded`'s tower exported by `export` at both precisions: {precision: folder}."""
    folders = {}
    for precision in ("fp32", "int8"):
        folders[precision] = tmp_path_factory.mktemp(f"{name}-{precision}")
        export(loaded.model, loaded.processor, folders[precision], precision)
    return folders


@pytest.fixture(scope="module")
def text_exports(clap_text, tmp_path_factory):
    """The tiny checkpoint's text tower exported at both precisions: {precision: folder}."""
    return _export_both(export_clap_text, clap_text, tmp_path_factory, "clap-text")


@pytest.fixture(scope="module")
def audio_exports(clap_audio, tmp_path_factory):
    """The tiny checkpoint's audio tower (as models.load_clap_audio loads it, fused attention) exported at both
    precisions: {precision: folder}."""
    return _export_both(export_clap_audio, clap_audio, tmp_path_factory, "clap-audio")


@pytest.fixture(scope="module")
def audio_export(audio_exports):
    return audio_exports["fp32"]


@pytest.fixture(scope="module")
def music_windows(clap_audio, sample_tracks) -> np.ndarray:
    """Ten real 10 s windows from two tracks of different moods: float32 (10, window_samples)."""
    extractor = clap_audio.processor.feature_extractor
    windows = [embed.split_windows(decode_audio(track, extractor.sampling_rate), extractor.nb_max_samples)[0][:5]
               for track in (sample_tracks[0], sample_tracks[-1])]
    return np.concatenate(windows)


@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.99999), ("int8", 0.999)])
def test_text_vectors_equal_torch(text_exports, clap_text, precision, min_cosine):
    """The batch holds padding (short texts next to a long one) and a text truncated to 512 tokens."""
    runtime = OnnxClapText.load(text_exports[precision])
    vectors = runtime.embed_text(TEXTS)
    expected = embed_text(clap_text, TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), clap_text.model.config.projection_dim)
    assert runtime.dim == clap_text.model.config.projection_dim
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert cosines(vectors, expected).min() >= min_cosine


def test_text_tokens_equal_transformers(text_exports, clap_text):
    """The Rust tokenizer alone pads and truncates exactly as query.embed_text's call of the transformers one."""
    tokenizer = clap_text.processor.tokenizer
    expected = tokenizer(TEXTS, return_tensors="np", padding=True, truncation=True,
                         max_length=min(tokenizer.model_max_length, 512))
    input_ids, attention_mask = OnnxClapText.load(text_exports["fp32"]).tokenize(TEXTS)
    assert input_ids.shape == (len(TEXTS), 512) and input_ids[-1, -1] == tokenizer.eos_token_id
    np.testing.assert_array_equal(input_ids, expected.input_ids)
    np.testing.assert_array_equal(attention_mask, expected.attention_mask)


def test_text_vector_does_not_depend_on_its_batch(text_exports):
    runtime = OnnxClapText.load(text_exports["fp32"])
    together = runtime.embed_text(TEXTS)
    alone = np.concatenate([runtime.embed_text([text]) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert runtime.embed_text([]).shape == (0, runtime.dim)


def test_log_mel_features_equal_the_extractor(clap_audio, music_windows):
    """numpy's float32 log-mel is the extractor's float64 one to 1e-3 dB. Against torch_runtime.log_mel_features
    (float32 torch.stft) it is held to 1e-2 dB, as that function is against the extractor (test_database): each of
    the two float32 FFTs rounds bins 60-80 dB below a frame's loudest by up to ~2e-3 dB, each its own way."""
    extractor = clap_audio.processor.feature_extractor
    features = log_mel_features(music_windows, extractor.mel_filters_slaney.astype(np.float32),
                                extractor.fft_window_size, extractor.hop_length)
    reference = extractor(list(music_windows), sampling_rate=extractor.sampling_rate,
                          return_tensors="np").input_features
    assert features.dtype == np.float32 and features.shape == reference.shape == (len(music_windows), 1, 1001, 64)
    np.testing.assert_allclose(features, reference, rtol=0, atol=1e-3)
    np.testing.assert_allclose(features, torch_runtime.log_mel_features(extractor, music_windows).numpy(),
                               rtol=0, atol=1e-2)


def test_log_mel_features_are_the_same_bits_whatever_the_blas_threads(clap_audio, music_windows):
    """A Ray worker runs with OMP_NUM_THREADS=1, a plain build on every core: OpenBLAS rounds the mel product by
    its thread count, and the int8 model turned that into vectors 1e-4 apart. The features must not depend on it."""
    from threadpoolctl import threadpool_limits

    extractor = clap_audio.processor.feature_extractor
    features = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads, user_api="blas"):
            features.append(log_mel_features(music_windows, extractor.mel_filters_slaney.astype(np.float32),
                                             extractor.fft_window_size, extractor.hop_length))
    for other in features[1:]:
        np.testing.assert_array_equal(other, features[0])


@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.99999), ("int8", 0.999)])
def test_audio_vectors_equal_torch(audio_exports, clap_audio, music_windows, precision, min_cosine):
    """Ten windows: a run of eight and one of two, against embed.embed_windows on the fused-attention torch model."""
    runtime = OnnxClapAudio.load(audio_exports[precision])
    vectors = runtime.embed_windows(music_windows)
    expected = embed.embed_windows(clap_audio, music_windows)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape == (len(music_windows), runtime.dim)
    extractor = clap_audio.processor.feature_extractor
    assert (runtime.sampling_rate, runtime.window_samples) == (extractor.sampling_rate, extractor.nb_max_samples)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert cosines(vectors, expected).min() >= min_cosine


def test_audio_vector_does_not_depend_on_its_batch_or_run(audio_export, music_windows):
    one_by_one = OnnxClapAudio.load(audio_export, windows_per_run=1).embed_windows(music_windows)
    runtime = OnnxClapAudio.load(audio_export)
    batched = runtime.embed_windows(music_windows)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)
    np.testing.assert_array_equal(runtime.embed_windows(music_windows), batched)  # deterministic
    with pytest.raises(ValueError, match="windows must be"):
        runtime.embed_windows(music_windows[:, :1000])


@pytest.mark.parametrize("change", [{"truncation": "fusion"}, {"top_db": 80}])
def test_export_refuses_an_extractor_it_cannot_mirror(clap_audio, tmp_path, change):
    """A fused checkpoint's extractor stacks four views with other filters; top_db clips: neither is mirrored."""
    from transformers import ClapFeatureExtractor, ClapProcessor

    unfused = clap_audio.processor.feature_extractor
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(**{**unfused.to_dict(), **change}),
                              tokenizer=clap_audio.processor.tokenizer)
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(ValueError, match="unfused"):
        export_clap_audio(clap_audio.model, processor, folder, "fp32")
    assert list(folder.iterdir()) == []  # nothing half-written


def test_incomplete_export_is_refused_with_what_to_do(text_exports, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "clap_text.json").write_bytes((text_exports["fp32"] / "clap_text.json").read_bytes())
    message = "missing clap_text.onnx, clap_text_tokenizer.json); export it again"
    with pytest.raises(OnnxClapError, match=re.escape(message)):
        OnnxClapText.load(folder)
    with pytest.raises(ValueError, match="precision"):
        export_clap_text(None, None, folder, "bf16")


def test_runtime_imports_neither_torch_nor_transformers(text_exports, audio_export):
    """A new process loads and runs both towers with numpy, onnxruntime and tokenizers only."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from music_mood.onnx_clap import OnnxClapAudio, OnnxClapText
        text = OnnxClapText.load({str(text_exports["int8"])!r}, threads=1)
        audio = OnnxClapAudio.load({str(audio_export)!r}, threads=1)
        assert text.embed_text(["a calm piano song"]).shape == (1, text.dim)
        windows = np.random.default_rng(0).standard_normal((2, audio.window_samples)).astype(np.float32)
        assert audio.embed_windows(windows).shape == (2, audio.dim)
        loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr


def test_export_leaves_the_model_as_it_found_it(clap_text, text_exports):
    """torch.onnx.export puts a module back in the mode it found it in; the tower must stay in eval mode (its
    dropout off), or every later torch query would be random."""
    assert not clap_text.model.training
    inputs = clap_text.processor.tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.inference_mode():
        first = clap_text.model(**inputs).text_embeds
        np.testing.assert_array_equal(first, clap_text.model(**inputs).text_embeds)
