"""BLIP exported to ONNX and run by OnnxBlip gives what the torch model gives, on the tiny checkpoint."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from music_mood.onnx_blip import OnnxBlip, OnnxExportError
from music_mood.onnx_blip_export import export_blip
from tests.conftest import ROOT

# Largest teacher-forced logit error allowed, relative to the std of torch's logits. fp32 differs by float
# rounding only; int8 (8-bit weight-only MatMuls, int8 embeddings) by the project's fidelity gate.
LOGIT_TOLERANCE = {"fp32": 1e-4, "int8": 0.06}
HIDDEN_TOLERANCE = {"fp32": 1e-5, "int8": 0.05}  # relative (Frobenius) error of the last hidden state


@pytest.fixture(scope="module")
def torch_blip(checkpoints):
    from transformers import AutoProcessor, BlipForConditionalGeneration

    model = BlipForConditionalGeneration.from_pretrained(checkpoints["blip"]).eval()
    return model, AutoProcessor.from_pretrained(checkpoints["blip"])


@pytest.fixture(scope="module")
def exported(torch_blip, tmp_path_factory):
    """{precision: folder} of the tiny checkpoint exported once per precision."""
    model, processor = torch_blip
    folders = {}
    for precision in ("fp32", "int8"):
        folders[precision] = tmp_path_factory.mktemp(f"onnx-blip-{precision}")
        export_blip(model, processor, folders[precision], precision)
    return folders


@pytest.fixture(scope="module", params=["fp32", "int8"])
def onnx_blip(request, exported):
    return OnnxBlip.load(exported[request.param], threads=1)


@pytest.fixture(scope="module")
def image_embeds(torch_blip, photos):
    """Torch vision features of a real photo: float32 (1, P, hidden)."""
    model, processor = torch_blip
    pixel_values = processor(images=Image.open(photos["astronaut.png"]).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        return model.vision_model(pixel_values=pixel_values.pixel_values)[0]


def _token_ids(blip: OnnxBlip) -> np.ndarray:
    """bos + "a photo of a happy cat" + sep: int64 (1, T)."""
    return np.array([[blip.bos_token_id, *blip.encode("a photo of a happy cat"), blip.sep_token_id]], np.int64)


def test_teacher_forced_logits_match_torch(onnx_blip, torch_blip, image_embeds):
    model, _ = torch_blip
    ids = _token_ids(onnx_blip)
    with torch.no_grad():
        out = model.text_decoder(input_ids=torch.from_numpy(ids), encoder_hidden_states=image_embeds,
                                 output_hidden_states=True)
    expected, expected_hidden = out.logits.numpy(), out.hidden_states[-1].numpy()
    cross = onnx_blip.cross_attention(image_embeds.numpy())
    logits, past = onnx_blip.decode(ids, cross)
    hidden = onnx_blip.last_hidden_state(ids, cross)

    assert logits.shape == expected.shape and logits.dtype == np.float32
    assert np.abs(logits - expected).max() / expected.std() <= LOGIT_TOLERANCE[onnx_blip.precision]
    assert np.linalg.norm(hidden - expected_hidden) / np.linalg.norm(expected_hidden) <= \
        HIDDEN_TOLERANCE[onnx_blip.precision]
    assert len(past) == 2 * model.config.text_config.num_hidden_layers
    assert all(array.shape[0] == 1 and array.shape[2] == ids.shape[1] for array in past)


def test_step_by_step_decode_equals_one_shot(onnx_blip, image_embeds):
    """T=1 steps with the past, as the caption loop runs, give the logits of one T=n pass."""
    ids = _token_ids(onnx_blip)
    cross = onnx_blip.cross_attention(image_embeds.numpy())
    whole, whole_past = onnx_blip.decode(ids, cross)
    past, steps = None, []
    for t in range(ids.shape[1]):
        logits, past = onnx_blip.decode(ids[:, t:t + 1], cross, past)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, atol=1e-4 * whole.std())
    for stepped, one_shot in zip(past, whole_past):
        np.testing.assert_allclose(stepped, one_shot, atol=1e-5)


def test_word_batch_from_repeated_past_equals_each_word_alone(onnx_blip, image_embeds):
    """The mood-word scoring: a prefix from an empty past, then a right-padded batch of words over one image."""
    cross = onnx_blip.cross_attention(image_embeds.numpy())
    prefix = np.array([[onnx_blip.bos_token_id, *onnx_blip.encode("a photo with a")]], np.int64)
    _, past = onnx_blip.decode(prefix, cross)
    words = [onnx_blip.encode(word) for word in ("calm", "melancholic", "xyzzy", "upbeat")]
    longest = max(len(w) for w in words)
    assert longest > 1  # a word of several tokens, so the padding matters
    batch = np.array([w + [onnx_blip.pad_token_id] * (longest - len(w)) for w in words], np.int64)

    logits, batch_past = onnx_blip.decode(batch, cross, onnx_blip.repeat(past, len(words)))

    assert logits.shape[:2] == batch.shape and batch_past[0].shape[:3] == (len(words), past[0].shape[1],
                                                                            prefix.shape[1] + longest)
    for i, word in enumerate(words):
        alone, _ = onnx_blip.decode(np.array([word], np.int64), cross, past)
        np.testing.assert_allclose(logits[i, :len(word)], alone[0], atol=1e-4 * alone.std())


def test_vision_features_match_torch(onnx_blip, torch_blip, photos):
    """fp32: torch's features to float rounding. int8 (8-bit weights): every token's features within cosine 0.999
    and 2 % relative error overall (the logits it leads to are held to the gate by the teacher-forced tests)."""
    model, processor = torch_blip
    pixel_values = processor(images=Image.open(photos["chelsea.png"]).convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        expected = model.vision_model(pixel_values=pixel_values.pixel_values)[0].numpy()
    features = onnx_blip.image_features(pixel_values.pixel_values.numpy())
    assert features.shape == expected.shape and features.dtype == np.float32
    if onnx_blip.precision == "fp32":
        np.testing.assert_allclose(features, expected, atol=1e-4)
    else:
        norms = np.linalg.norm(features, axis=-1) * np.linalg.norm(expected, axis=-1)
        cosines = np.sum(features * expected, -1) / norms
        assert cosines.min() >= 0.999
        assert np.linalg.norm(features - expected) / np.linalg.norm(expected) <= 0.02


def _odd_images(photos) -> dict[str, Image.Image]:
    """Real photos as a user's files come: RGB, greyscale, RGBA with transparency, a palette, odd sizes."""
    images = {name: Image.open(path) for name, path in photos.items()}
    rocket = images["rocket.jpg"].convert("RGB")
    rgba = rocket.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    images["rocket-rgba"] = rgba
    images["rocket-grey-odd"] = rocket.convert("L").resize((37, 211))
    images["rocket-palette"] = rocket.convert("P")
    images["coffee-1px-wide"] = images["coffee.png"].convert("RGB").resize((1, 97))
    return images


def test_pixel_values_match_processor(exported, torch_blip, photos):
    _, processor = torch_blip
    blip = OnnxBlip.load(exported["fp32"])
    for name, image in _odd_images(photos).items():
        expected = processor(images=image, return_tensors="np").pixel_values
        got = blip.pixel_values(image)
        assert got.shape == expected.shape == (1, 3, *blip.image_size) and got.dtype == np.float32, name
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


def test_tokens_match_transformers_tokenizer(exported, torch_blip):
    _, processor = torch_blip
    tokenizer = processor.tokenizer
    blip = OnnxBlip.load(exported["fp32"])
    texts = ["a photo with a", "A Happy, DREAMY song!", "the cat's warm -- nostalgic mood?", "xyzzy 42", ""]
    for text in texts:
        assert blip.encode(text) == tokenizer(text, add_special_tokens=False).input_ids, text
    id_lists = [tokenizer(text).input_ids for text in texts]
    id_lists += [[blip.bos_token_id, *blip.encode("a dog , isn ' t it ?"), blip.sep_token_id, blip.pad_token_id],
                 list(range(0, 120, 7)), []]
    for ids in id_lists:
        assert blip.decode_tokens(ids) == tokenizer.decode(ids, skip_special_tokens=True).strip(), ids
    assert (blip.bos_token_id, blip.sep_token_id, blip.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)


def test_load_without_export_says_what_to_do(tmp_path):
    with pytest.raises(OnnxExportError, match="export_blip"):
        OnnxBlip.load(tmp_path)


def test_runtime_imports_neither_torch_nor_transformers(exported, photos):
    """Loading and running OnnxBlip (image to caption tokens, a word batch) in a fresh process."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from PIL import Image
        from music_mood.onnx_blip import OnnxBlip

        blip = OnnxBlip.load({str(exported["int8"])!r}, threads=1)
        cross = blip.cross_attention(blip.image_features(blip.pixel_values(Image.open({str(photos["coffee.png"])!r}))))
        logits, past = blip.decode(np.array([[blip.bos_token_id]]), cross)
        logits, past = blip.decode(logits[:, -1:].argmax(-1), cross, past)
        blip.decode(np.array([[1, 2], [3, 4]]), cross, blip.repeat(past, 2))
        print(blip.decode_tokens(logits[0].argmax(-1)), blip.encode("a photo"))
        loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
