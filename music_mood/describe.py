"""Describing a photo with BLIP: its caption and the mood words chosen for it, and what a model remembers of both."""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from music_mood.storage import write_atomically

# The words a photo's mood is described with. Each is scored for every image (see choose_mood_words); the
# README lists them. Kept to single adjectives a music caption would use, so CLAP reads them as music moods.
MOOD_VOCABULARY = (
    "happy", "joyful", "playful", "energetic", "upbeat", "triumphant", "epic", "dramatic",
    "tense", "mysterious", "dark", "melancholic", "sad", "lonely", "nostalgic", "tender",
    "romantic", "dreamy", "calm", "peaceful", "serene", "warm", "cozy", "festive",
)  # fmt: skip
MOOD_PROMPT_PREFIX = "a photo with a"  # the word follows, then "mood": "a photo with a calm mood"
MOOD_WORDS_PER_IMAGE = 3
MAX_CAPTION_TOKENS = 30
DESCRIPTIONS_KEPT = 32  # photos whose caption and mood words are remembered, per model
CACHE_ENV = "MUSIC_MOOD_CACHE"


def _pixel_values(blip, image: Image.Image):
    """What BLIP's vision tower sees of an RGB image: float32 (1, 3, H, W), resized and normalised."""
    return blip.processor(images=image, return_tensors="pt").pixel_values


def _vision_features(blip, image: Image.Image, pixel_values=None):
    """BLIP's vision tower on one image: (1, patches + 1, hidden) in the model's dtype."""
    pixel_values = _pixel_values(blip, image) if pixel_values is None else pixel_values
    return blip.model.vision_model(pixel_values=pixel_values.to(blip.device, blip.dtype))[0]


def _special_ids(blip) -> tuple[int, int, int]:
    text_config = blip.model.config.text_config
    return text_config.bos_token_id, text_config.sep_token_id, text_config.pad_token_id


def _decoder_cache(cross_attention=None):
    """A cache for BLIP's text decoder. Pass the cross-attention part of an earlier cache for the same image to
    reuse its keys/values over the image (12 layers x 577 positions) instead of computing them again."""
    from transformers import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(), cross_attention if cross_attention is not None else DynamicCache())


def caption_image(blip, image_embeds, max_new_tokens: int = MAX_CAPTION_TOKENS, min_new_tokens: int = 0,
                  prompt: str = "", cross_attention=None) -> str:
    """Greedy BLIP caption from precomputed vision features; a conditional `prompt` is stripped from the output.

    A plain greedy loop rather than generate(): generate() on BLIP's text decoder keeps no cross-attention cache,
    so it recomputes the keys/values over the image at every token. Here they are computed once, into
    `cross_attention` when given (an empty DynamicCache to fill, or one already filled for this image).
    """
    import torch

    bos, sep, _ = _special_ids(blip)
    tokenizer = blip.processor.tokenizer
    decoder = blip.model.text_decoder
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    cache = _decoder_cache(cross_attention)
    step_ids = torch.tensor([[bos, *prompt_ids]], device=blip.device)
    caption_ids = []
    for step in range(max_new_tokens):
        logits = decoder(input_ids=step_ids, encoder_hidden_states=image_embeds, cache=cache, use_cache=True,
                         logits_to_keep=1).logits[0, -1]
        if step < min_new_tokens:
            logits[sep] = -torch.inf
        token = int(logits.argmax())
        if token == sep:
            break
        caption_ids.append(token)
        step_ids = torch.tensor([[token]], device=blip.device)
    return tokenizer.decode(caption_ids, skip_special_tokens=True).strip()


def _mood_log_likelihoods(blip, image_embeds, vocabulary, cross_attention=None) -> np.ndarray:
    """Mean log-probability of each vocabulary word completing "a photo with a ___" given the image: (V,) float64.

    The prefix and the image's cross-attention keys/values are computed once (or reused from `cross_attention`);
    the words then run as one batch whose cross-attention broadcasts over that single cached image.
    """
    import torch

    bos, _, pad = _special_ids(blip)
    tokenizer = blip.processor.tokenizer
    decoder = blip.model.text_decoder
    prefix = torch.tensor([[bos, *tokenizer(MOOD_PROMPT_PREFIX, add_special_tokens=False).input_ids]],
                          device=blip.device)
    cache = _decoder_cache(cross_attention)
    out = decoder(input_ids=prefix, encoder_hidden_states=image_embeds, cache=cache, use_cache=True)
    first_log_probs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    words = [tokenizer(word, add_special_tokens=False).input_ids for word in vocabulary]
    longest = max(len(w) for w in words)
    scores = np.array([first_log_probs[w[0]].item() for w in words], dtype=np.float64)
    if longest > 1:
        # Right padding is harmless under a causal mask: pads come after every real token.
        batch = torch.tensor([w + [pad] * (longest - len(w)) for w in words], device=blip.device)
        cache.self_attention_cache.batch_repeat_interleave(len(words))
        out = decoder(input_ids=batch, encoder_hidden_states=image_embeds, cache=cache, use_cache=True)
        log_probs = torch.log_softmax(out.logits.float(), dim=-1)
        for i, word in enumerate(words):
            for j in range(1, len(word)):
                scores[i] += log_probs[i, j - 1, word[j]].item()
    return scores / np.array([len(w) for w in words])


def cache_dir() -> Path:
    """Where results derived from a model alone are kept between runs: $MUSIC_MOOD_CACHE, else the user's cache
    folder ($XDG_CACHE_HOME or ~/.cache) / music-mood. Deleting it is always safe."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "music-mood"


def model_fingerprint(model) -> str:
    """A content hash of a model's weights, cheap enough to take at every start (~20 ms for BLIP-base in RAM): each
    parameter's name, shape and 4096 evenly spaced values. Checkpoints trained or initialised differently differ
    in it; so do fp32 and int8 loads of one checkpoint (int8 layers hold no float parameters)."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        flat = parameter.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 4096)][:4096].float().cpu().numpy()
        digest.update(f"{name}{tuple(parameter.shape)}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _neutral_cache_path(blip, vocabulary) -> Path:
    import torch
    import transformers

    key = json.dumps({"model": model_fingerprint(blip.model), "dtype": str(blip.dtype), "device": blip.device.type,
                      "vocabulary": list(vocabulary), "prompt": MOOD_PROMPT_PREFIX, "size": _processor_size(blip),
                      "torch": torch.__version__, "transformers": transformers.__version__}, sort_keys=True)
    return cache_dir() / f"mood-baseline-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_neutral_scores(path: Path, vocabulary) -> np.ndarray | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        scores = np.array(saved["scores"], dtype=np.float64)
        if saved["vocabulary"] == list(vocabulary) and scores.shape == (len(vocabulary),) and np.isfinite(scores).all():
            return scores
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable or damaged: compute it again
        pass
    return None


def _write_neutral_scores(path: Path, vocabulary, scores: np.ndarray) -> None:
    try:
        write_atomically(path, lambda f: f.write(json.dumps({"vocabulary": list(vocabulary),
                                                             "scores": scores.tolist()}).encode()))
    except OSError:  # a read-only or full disk only costs the next run the grey-image pass again
        pass


@dataclass
class Memory:
    """What one loaded BLIP model has worked out and may be asked again (see memory_of): the grey-image mood
    baseline per vocabulary, and the caption and mood words of the last `photos_kept` photos, keyed by a hash of
    the pixels the model sees, newest last."""

    photos_kept: int = DESCRIPTIONS_KEPT
    baselines: dict = field(default_factory=dict)
    photos: OrderedDict = field(default_factory=OrderedDict)

    def recall(self, key) -> tuple[str, list[str]] | None:
        if key not in self.photos:
            return None
        self.photos.move_to_end(key)
        caption, mood_words = self.photos[key]
        return caption, list(mood_words)

    def remember(self, key, caption: str, mood_words: list[str]) -> None:
        self.photos[key] = (caption, tuple(mood_words))
        while len(self.photos) > self.photos_kept:
            self.photos.popitem(last=False)


def memory_of(blip) -> Memory:
    """The Memory a loaded BLIP model (models.LoadedModel) carries, made on first use; it goes with the model."""
    return blip.memory.setdefault("describe", Memory())


def neutral_mood_scores(blip, vocabulary=MOOD_VOCABULARY) -> np.ndarray:
    """The mood words' scores for a neutral grey image: (V,) float64, BLIP's prior for each word.

    A property of the model alone, so it is computed once (one vision pass, ~0.9 s for BLIP-base on a 2-core
    CPU) and kept in memory and in cache_dir(), keyed by model_fingerprint, precision, vocabulary and library
    versions: a new process reads it instead of paying for the pass again.
    """
    import torch

    known = memory_of(blip).baselines
    if tuple(vocabulary) not in known:
        path = _neutral_cache_path(blip, vocabulary)
        scores = _read_neutral_scores(path, vocabulary)
        if scores is None:
            with torch.inference_mode():
                grey = torch.zeros((1, 3, *_processor_size(blip)), device=blip.device, dtype=blip.dtype)
                grey_embeds = blip.model.vision_model(pixel_values=grey)[0]  # zeros = the dataset mean, normalised
                scores = _mood_log_likelihoods(blip, grey_embeds, vocabulary)
            _write_neutral_scores(path, vocabulary, scores)
        known[tuple(vocabulary)] = scores
    return known[tuple(vocabulary)]


def choose_mood_words(blip, image_embeds, k: int = MOOD_WORDS_PER_IMAGE, vocabulary=MOOD_VOCABULARY,
                      cross_attention=None) -> list[str]:
    """The k words of `vocabulary` whose likelihood this image raises most over a neutral grey image.

    Score = log p(word | "a photo with a", image) - log p(word | "a photo with a", grey image), each averaged over
    the word's tokens. Subtracting the grey baseline removes BLIP's prior for common words, so the words are
    chosen by what is in this image. Ties keep vocabulary order. `cross_attention`: as in caption_image.
    """
    scores = _mood_log_likelihoods(blip, image_embeds, vocabulary, cross_attention) - neutral_mood_scores(blip,
                                                                                                          vocabulary)
    order = np.argsort(-scores, kind="stable")[:k]
    return [vocabulary[i] for i in order]


def _processor_size(blip) -> tuple[int, int]:
    size = blip.processor.image_processor.size
    return size["height"], size["width"]


def describe_image(blip, image: Image.Image, max_new_tokens: int = MAX_CAPTION_TOKENS,
                   min_new_tokens: int = 0) -> tuple[str, list[str]]:
    """Caption and mood words for one RGB image; BLIP's vision tower and the decoder's cross-attention over the
    image run once for both. The caption has at most `max_new_tokens` tokens and at least `min_new_tokens`.

    The answers for the last photos are remembered in the model's Memory, keyed by a hash of the pixels the model
    sees: asking about the same photo again (another top-k, filter or text in the app) skips BLIP, ~1.5 s on a
    2-core CPU, and gives the same words it would compute.
    """
    import torch
    from transformers import DynamicCache

    pixel_values = _pixel_values(blip, image)
    key = (hashlib.sha256(pixel_values.numpy().tobytes()).hexdigest(), max_new_tokens, min_new_tokens)
    memory = memory_of(blip)
    remembered = memory.recall(key)
    if remembered is not None:
        return remembered
    with torch.inference_mode():
        image_embeds = _vision_features(blip, image, pixel_values)
        cross_attention = DynamicCache()  # filled by the caption, reused by the mood words
        caption = caption_image(blip, image_embeds, max_new_tokens, min_new_tokens, cross_attention=cross_attention)
        mood_words = choose_mood_words(blip, image_embeds, cross_attention=cross_attention)
    memory.remember(key, caption, mood_words)
    return caption, mood_words


def forget_descriptions(blip) -> None:
    """Drop the photos `blip` remembers, so the next describe_image does the full work (benchmarks time that)."""
    memory_of(blip).photos.clear()
