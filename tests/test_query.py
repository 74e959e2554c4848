"""Image/text → query: caption, mood words chosen per image, and the CLAP text vector, on tiny real checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from image_to_vector import (
    MOOD_PROMPT_PREFIX,
    MOOD_VOCABULARY,
    MOOD_WORDS_PER_IMAGE,
    ImageError,
    choose_mood_words,
    compose_query_text,
    describe_image,
    embed_text,
    image_to_query,
    open_image,
)
from music_mood.engines import ModelChoice


def _vision_features(blip, image):
    """BLIP's vision tower on one image, through the runtime the product uses."""
    return blip.runtime.image_features(blip.runtime.pixel_values(image))


def _cross(blip, image_embeds):
    return blip.runtime.cross_attention(image_embeds)


def _reference_word_scores(blip, image_embeds) -> np.ndarray:
    """Brute force: one full decoder pass per word, no cache, no batching."""
    tokenizer = blip.processor.tokenizer
    bos = blip.model.config.text_config.bos_token_id
    prefix = tokenizer(MOOD_PROMPT_PREFIX, add_special_tokens=False).input_ids
    scores = []
    for word in MOOD_VOCABULARY:
        word_ids = tokenizer(word, add_special_tokens=False).input_ids
        ids = torch.tensor([[bos, *prefix, *word_ids]])
        with torch.inference_mode():
            logits = blip.model.text_decoder(input_ids=ids, encoder_hidden_states=image_embeds).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        start = 1 + len(prefix)
        scores.append(np.mean([log_probs[start + j - 1, t].item() for j, t in enumerate(word_ids)]))
    return np.array(scores)


def test_mood_words_match_brute_force_reference(blip, photos):
    with torch.inference_mode():
        image_embeds = _vision_features(blip, open_image(photos["astronaut.png"]))
        size = blip.processor.image_processor.size
        grey = blip.model.vision_model(pixel_values=torch.zeros(1, 3, size["height"], size["width"]))[0]
    expected = _reference_word_scores(blip, image_embeds) - _reference_word_scores(blip, grey)
    chosen = choose_mood_words(blip, _cross(blip, image_embeds))
    order = np.argsort(-expected, kind="stable")
    assert chosen == [MOOD_VOCABULARY[i] for i in order[:MOOD_WORDS_PER_IMAGE]]
    assert all(word in MOOD_VOCABULARY for word in chosen) and len(set(chosen)) == MOOD_WORDS_PER_IMAGE


def test_mood_words_depend_on_the_image(blip, photos):
    """Not a fixed suffix: each photo's own features move the word scores the choice is made from."""
    with torch.inference_mode():
        scores = [_reference_word_scores(blip, _vision_features(blip, open_image(photos[name])))
                  for name in ("astronaut.png", "hubble_deep_field.jpg")]
    assert np.abs(scores[0] - scores[1]).max() > 1e-6


def test_caption_is_a_bounded_string(blip, photos):
    caption, _ = describe_image(blip, open_image(photos["coffee.png"]), max_new_tokens=5)
    assert isinstance(caption, str) and caption == caption.strip()
    assert len(blip.processor.tokenizer(caption, add_special_tokens=False).input_ids) <= 5 + 2  # wordpiece slack


def test_forced_caption_length(blip, photos):
    with torch.inference_mode():
        image_embeds = _vision_features(blip, open_image(photos["coffee.png"]))
        from image_to_vector import caption_image

        free = caption_image(blip, _cross(blip, image_embeds), max_new_tokens=12, min_new_tokens=12)
    assert len(free.split()) >= 1


@pytest.mark.parametrize("photo, min_new, max_new", [("coffee.png", 12, 12), ("astronaut.png", 0, 30),
                                                     ("rocket.jpg", 3, 8)])
def test_greedy_loop_gives_what_generate_gives(blip, photos, photo, min_new, max_new):
    """caption_image's own loop (cross-attention cached once, shared with the mood words) is a faithful greedy
    decode: the same tokens as transformers' generate(), and the shared cache leaves the mood words unchanged."""
    from image_to_vector import caption_image, choose_mood_words

    bos, sep, pad = blip.model.config.text_config.bos_token_id, blip.model.config.text_config.sep_token_id, \
        blip.model.config.text_config.pad_token_id
    with torch.inference_mode():
        image_embeds = _vision_features(blip, open_image(photos[photo]))
        out = blip.model.text_decoder.generate(input_ids=torch.tensor([[bos]]), encoder_hidden_states=image_embeds,
                                               eos_token_id=sep, pad_token_id=pad, max_new_tokens=max_new,
                                               min_new_tokens=min_new, do_sample=False, num_beams=1)
        reference = blip.processor.tokenizer.decode(out[0, 1:], skip_special_tokens=True).strip()
        cross = _cross(blip, image_embeds)
        assert caption_image(blip, cross, max_new, min_new) == reference
        assert choose_mood_words(blip, cross) == choose_mood_words(blip, _cross(blip, image_embeds))


def test_prompt_is_stripped_from_caption(blip, photos):
    from image_to_vector import caption_image

    with torch.inference_mode():
        image_embeds = _vision_features(blip, open_image(photos["coffee.png"]))
        caption = caption_image(blip, _cross(blip, image_embeds), max_new_tokens=4, prompt="a photo of")
    assert not caption.startswith("a photo of")


def test_query_text_composition():
    assert compose_query_text("a dog on a beach", ["calm", "warm"]) == "a dog on a beach; calm, warm mood"
    assert compose_query_text("", ["calm", "warm"]) == "calm, warm mood"  # empty caption still usable
    assert compose_query_text("a dog", ["calm"], "rainy night, jazz") == "rainy night, jazz; a dog; calm mood"
    assert compose_query_text("", [], "jazz") == "jazz"


def test_text_vectors_are_unit_float32_of_checkpoint_dimension(clap_text):
    vectors = embed_text(clap_text, ["a calm piano", "an energetic drum beat"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, clap_text.model.config.projection_dim) and vectors.shape[1] != 512
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])


def test_text_tower_alone_equals_full_clap_model(checkpoints, clap_text):
    """Loading only the text half gives exactly the full model's text features."""
    from transformers import ClapModel

    full = ClapModel.from_pretrained(checkpoints["clap"]).eval()
    tokens = clap_text.processor.tokenizer(["a calm photo; warm mood"], return_tensors="pt")
    with torch.inference_mode():
        expected = full.get_text_features(**tokens).pooler_output  # transformers 5: an output object
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(embed_text(clap_text, ["a calm photo; warm mood"]), expected, atol=1e-6)


def test_image_and_text_combine_into_one_query(blip, clap_text, photos):
    image_only = image_to_query(blip, clap_text, image=photos["rocket.jpg"])
    both = image_to_query(blip, clap_text, image=photos["rocket.jpg"], text="rainy night, jazz")
    text_only = image_to_query(None, clap_text, text="rainy night, jazz")
    assert both.query_text == f"rainy night, jazz; {image_only.query_text}"
    assert text_only.caption == "" and text_only.mood_words == [] and text_only.query_text == "rainy night, jazz"
    np.testing.assert_allclose(both.vector, embed_text(clap_text, [both.query_text])[0], atol=1e-6)
    assert not np.allclose(both.vector, image_only.vector)


def test_same_image_gives_same_query(blip, clap_text, photos):
    first = image_to_query(blip, clap_text, image=photos["chelsea.png"])
    second = image_to_query(blip, clap_text, image=photos["chelsea.png"])
    assert first.query_text == second.query_text
    np.testing.assert_array_equal(first.vector, second.vector)


def test_no_input_is_an_error(clap_text):
    with pytest.raises(ValueError):
        image_to_query(None, clap_text)


def test_bad_image_raises_image_error(blip, clap_text, tmp_path):
    bad = tmp_path / "song.mp3.png"
    bad.write_bytes(b"ID3\x03\x00 not an image")
    with pytest.raises(ImageError):
        image_to_query(blip, clap_text, image=bad)


def test_int8_precision_stays_close_to_fp32(checkpoints, photos):
    """--precision int8 quantises the linear layers; the query vector for a text stays within cosine 0.99."""
    from music_mood.models import load_blip, load_clap_text

    text = ["a cat on a red blanket; calm, warm, cozy mood"]
    int8 = load_clap_text(checkpoints["clap"], ModelChoice("int8", "torch"))
    fp32 = load_clap_text(checkpoints["clap"], ModelChoice("fp32"))
    assert int8.device.type == "cpu" and type(int8.model.text_projection.linear1).__name__ == "Linear" and \
        "quantized" in type(int8.model.text_projection.linear1).__module__
    assert float(embed_text(int8, text)[0] @ embed_text(fp32, text)[0]) > 0.99
    caption, moods = describe_image(load_blip(checkpoints["blip"], ModelChoice("int8", "torch")),
                                    open_image(photos["coffee.png"]))
    assert isinstance(caption, str) and len(moods) == MOOD_WORDS_PER_IMAGE


def test_fused_vision_attention_matches_transformers(checkpoints, blip, photos):
    """load_blip runs the vision tower's attention through the fused kernel; the features stay transformers'."""
    from transformers import BlipForConditionalGeneration

    reference = BlipForConditionalGeneration.from_pretrained(checkpoints["blip"]).eval()
    pixels = blip.processor(images=open_image(photos["astronaut.png"]), return_tensors="pt").pixel_values
    with torch.inference_mode():
        torch.testing.assert_close(blip.model.vision_model(pixel_values=pixels)[0],
                                   reference.vision_model(pixel_values=pixels)[0], rtol=1e-4, atol=1e-5)


def _grey_embeds(blip):
    size = blip.processor.image_processor.size
    with torch.inference_mode():
        return blip.model.vision_model(pixel_values=torch.zeros(1, 3, size["height"], size["width"]))[0]


def test_grey_baseline_is_kept_on_disk_and_read_back(blip, monkeypatch):
    """The grey-image scores are computed once per model and read back by a new process, not computed again."""
    import image_to_vector

    image_to_vector.memory_of(blip).baselines.clear()  # as in a new process
    computed = image_to_vector.neutral_mood_scores(blip)
    np.testing.assert_allclose(computed, _reference_word_scores(blip, _grey_embeds(blip)), rtol=1e-5, atol=1e-6)
    (saved,) = image_to_vector.cache_dir().glob("mood-baseline-*.json")

    def no_vision_pass(*args, **kwargs):
        raise AssertionError("the vision tower ran although the baseline was cached")

    image_to_vector.memory_of(blip).baselines.clear()
    monkeypatch.setattr(blip.model.vision_model, "forward", no_vision_pass)
    np.testing.assert_array_equal(image_to_vector.neutral_mood_scores(blip), computed)
    assert list(image_to_vector.cache_dir().glob("mood-baseline-*.json")) == [saved]


@pytest.mark.parametrize("damage", ["{", '{"vocabulary": ["calm"], "scores": [1.0]}', ""])
def test_damaged_baseline_file_is_computed_again(blip, monkeypatch, damage):
    import image_to_vector

    image_to_vector.memory_of(blip).baselines.clear()
    computed = image_to_vector.neutral_mood_scores(blip)
    (saved,) = image_to_vector.cache_dir().glob("mood-baseline-*.json")
    saved.write_text(damage)
    image_to_vector.memory_of(blip).baselines.clear()
    np.testing.assert_array_equal(image_to_vector.neutral_mood_scores(blip), computed)
    assert json.loads(saved.read_text())["scores"] == computed.tolist()  # and repaired on disk


def test_unwritable_cache_only_costs_time(blip, monkeypatch, tmp_path):
    import image_to_vector

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("MUSIC_MOOD_CACHE", str(blocker))
    image_to_vector.memory_of(blip).baselines.clear()
    np.testing.assert_allclose(image_to_vector.neutral_mood_scores(blip),
                               _reference_word_scores(blip, _grey_embeds(blip)), rtol=1e-5, atol=1e-6)


def test_baseline_cache_key_follows_the_weights(checkpoints, blip, tmp_path):
    """The same checkpoint loaded again shares the file; other weights, int8 or another vocabulary do not."""
    from music_mood import models
    from music_mood.describe import _neutral_cache_path
    from tests.model_factory import build_blip_checkpoint

    path = _neutral_cache_path(blip, MOOD_VOCABULARY)
    assert _neutral_cache_path(models._load("BLIP", checkpoints["blip"], "blip", ModelChoice("fp32", "torch")),
                               MOOD_VOCABULARY) == path
    other = models._load("BLIP", str(build_blip_checkpoint(tmp_path / "other", seed=1)),
                         "blip", ModelChoice("fp32", "torch"))
    int8 = models._load("BLIP", checkpoints["blip"], "blip", ModelChoice("int8", "torch"))
    assert len({path, _neutral_cache_path(other, MOOD_VOCABULARY), _neutral_cache_path(int8, MOOD_VOCABULARY),
                _neutral_cache_path(blip, MOOD_VOCABULARY[:-1])}) == 4


def _count_vision_passes(blip, monkeypatch) -> list:
    calls = []
    forward = blip.model.vision_model.forward
    monkeypatch.setattr(blip.model.vision_model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    return calls


def test_same_photo_again_skips_blip(blip, photos, monkeypatch):
    """Asking again about a photo (the app: another top-k, filter or text) reuses its caption and mood words."""
    import image_to_vector

    image_to_vector.forget_descriptions(blip)
    image_to_vector.neutral_mood_scores(blip)  # computed now, so its grey pass is not counted below
    calls = _count_vision_passes(blip, monkeypatch)
    first = describe_image(blip, open_image(photos["coffee.png"]))
    first[1].append("changed by the caller")
    again = describe_image(blip, open_image(photos["coffee.png"]))
    assert len(calls) == 1 and again[0] == first[0] and "changed by the caller" not in again[1]
    assert describe_image(blip, open_image(photos["astronaut.png"])) != again and len(calls) == 2
    image_to_vector.forget_descriptions(blip)
    assert describe_image(blip, open_image(photos["coffee.png"])) == again and len(calls) == 3


def test_remembered_photos_are_bounded(blip, photos, monkeypatch):
    import image_to_vector

    image_to_vector.forget_descriptions(blip)
    image_to_vector.neutral_mood_scores(blip)
    monkeypatch.setattr(image_to_vector.memory_of(blip), "photos_kept", 2)
    calls = _count_vision_passes(blip, monkeypatch)
    for name in ("coffee.png", "astronaut.png", "rocket.jpg", "rocket.jpg", "coffee.png"):
        describe_image(blip, open_image(photos[name]))
    assert len(calls) == 4  # rocket was remembered; coffee had been pushed out by astronaut and rocket
