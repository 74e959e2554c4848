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


def caption_image(blip, cross, max_new_tokens: int = MAX_CAPTION_TOKENS, min_new_tokens: int = 0,
                  prompt: str = "") -> str:
    """Greedy BLIP caption of the photo whose cross-attention `cross` is (blip.runtime.cross_attention of its
    vision features); a conditional `prompt` is stripped from the output.

    A plain greedy loop over the runtime's decoder with its self-attention cache: the keys/values over the image
    are computed once per photo and shared with the mood words, where generate() would compute them at every token.
    """
    runtime = blip.runtime
    ids = np.array([[runtime.bos_token_id, *(runtime.encode(prompt) if prompt else [])]], dtype=np.int64)
    past, caption_ids = None, []
    for step in range(max_new_tokens):
        logits, past = runtime.decode(ids, cross, past)
        logits = logits[0, -1]
        if step < min_new_tokens:
            logits[runtime.sep_token_id] = -np.inf
        token = int(logits.argmax())
        if token == runtime.sep_token_id:
            break
        caption_ids.append(token)
        ids = np.array([[token]], dtype=np.int64)
    return runtime.decode_tokens(caption_ids)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _mood_log_likelihoods(blip, cross, vocabulary) -> np.ndarray:
    """Mean log-probability of each vocabulary word completing "a photo with a ___" given the photo whose
    cross-attention `cross` is: (V,) float64.

    The prefix runs once; the words then run as one batch after it, whose cross-attention broadcasts over the one
    photo. Right padding is harmless under a causal mask: pads come after every real token.
    """
    runtime = blip.runtime
    prefix = np.array([[runtime.bos_token_id, *runtime.encode(MOOD_PROMPT_PREFIX)]], dtype=np.int64)
    logits, past = runtime.decode(prefix, cross)
    first_log_probs = _log_softmax(logits[0, -1])

    words = [runtime.encode(word) for word in vocabulary]
    longest = max(len(w) for w in words)
    scores = np.array([first_log_probs[w[0]] for w in words], dtype=np.float64)
    if longest > 1:
        batch = np.array([w + [runtime.pad_token_id] * (longest - len(w)) for w in words], dtype=np.int64)
        logits, _ = runtime.decode(batch, cross, runtime.repeat(past, len(words)))
        log_probs = _log_softmax(logits)
        for i, word in enumerate(words):
            for j in range(1, len(word)):
                scores[i] += log_probs[i, j - 1, word[j]]
    return scores / np.array([len(w) for w in words])


def cache_dir() -> Path:
    """Where results derived from a model alone are kept between runs: $MUSIC_MOOD_CACHE, else the user's cache
    folder ($XDG_CACHE_HOME or ~/.cache) / music-mood. Deleting it is always safe."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "music-mood"


def _neutral_cache_path(blip, vocabulary) -> Path:
    key = json.dumps({**blip.runtime.cache_key(), "vocabulary": list(vocabulary), "prompt": MOOD_PROMPT_PREFIX,
                      "size": blip.runtime.image_size}, sort_keys=True)
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
    CPU) and kept in memory and in cache_dir(), keyed by the runtime's cache_key (the weights, the precision, the
    library versions) and the vocabulary: a new process reads it instead of paying for the pass again.
    """
    known = memory_of(blip).baselines
    if tuple(vocabulary) not in known:
        path = _neutral_cache_path(blip, vocabulary)
        scores = _read_neutral_scores(path, vocabulary)
        if scores is None:
            runtime = blip.runtime
            grey = np.zeros((1, 3, *runtime.image_size), dtype=np.float32)  # zeros = the dataset mean, normalised
            scores = _mood_log_likelihoods(blip, runtime.cross_attention(runtime.image_features(grey)), vocabulary)
            _write_neutral_scores(path, vocabulary, scores)
        known[tuple(vocabulary)] = scores
    return known[tuple(vocabulary)]


def choose_mood_words(blip, cross, k: int = MOOD_WORDS_PER_IMAGE, vocabulary=MOOD_VOCABULARY) -> list[str]:
    """The k words of `vocabulary` whose likelihood this image raises most over a neutral grey image.

    Score = log p(word | "a photo with a", image) - log p(word | "a photo with a", grey image), each averaged over
    the word's tokens. Subtracting the grey baseline removes BLIP's prior for common words, so the words are
    chosen by what is in this image. Ties keep vocabulary order. `cross`: as in caption_image.
    """
    scores = _mood_log_likelihoods(blip, cross, vocabulary) - neutral_mood_scores(blip, vocabulary)
    order = np.argsort(-scores, kind="stable")[:k]
    return [vocabulary[i] for i in order]


def describe_image(blip, image: Image.Image, max_new_tokens: int = MAX_CAPTION_TOKENS,
                   min_new_tokens: int = 0) -> tuple[str, list[str]]:
    """Caption and mood words for one RGB image; BLIP's vision tower and the decoder's cross-attention over the
    image run once for both. The caption has at most `max_new_tokens` tokens and at least `min_new_tokens`.

    The answers for the last photos are remembered in the model's Memory, keyed by a hash of the pixels the model
    sees: asking about the same photo again (another top-k, filter or text in the app) skips BLIP, ~1.5 s on a
    2-core CPU, and gives the same words it would compute.
    """
    return describe_pixels(blip, [blip.runtime.pixel_values(image)], max_new_tokens, min_new_tokens)[0]


def vision_batch_size(blip) -> int:
    """How many photos' vision passes describe_pixels runs at once: the runtime's `vision_batch_size` (1 when it
    has none, or when batching is not cheaper there)."""
    return max(1, int(getattr(blip.runtime, "vision_batch_size", 1)))


def describe_pixels(blip, pixel_values: list[np.ndarray], max_new_tokens: int = MAX_CAPTION_TOKENS,
                    min_new_tokens: int = 0) -> list[tuple[str, list[str]]]:
    """describe_image for several photos' pixel values (each float32 (1, 3, H, W), runtime.pixel_values), in
    order. The photos the model does not remember go through the vision tower together, in one batch: the same
    features as one at a time (batched rows are computed alone), for less work where the runtime is faster
    batched (see vision_batch_size); the caption and mood words are then decoded photo by photo."""
    runtime, memory = blip.runtime, memory_of(blip)
    keys = [(hashlib.sha256(p.tobytes()).hexdigest(), max_new_tokens, min_new_tokens) for p in pixel_values]
    answers = [memory.recall(key) for key in keys]
    new: dict = {}  # key -> the positions of a photo not remembered (a photo given twice is described once)
    for i, (key, answer) in enumerate(zip(keys, answers)):
        if answer is None:
            new.setdefault(key, []).append(i)
    if new:
        features = runtime.image_features(np.concatenate([pixel_values[rows[0]] for rows in new.values()]))
        for row, (key, rows) in enumerate(new.items()):
            cross = runtime.cross_attention(features[row:row + 1])  # shared by the caption and mood words
            caption = caption_image(blip, cross, max_new_tokens, min_new_tokens)
            mood_words = choose_mood_words(blip, cross)
            memory.remember(key, caption, mood_words)
            for i in rows:
                answers[i] = (caption, list(mood_words))
    return answers


def forget_descriptions(blip) -> None:
    """Drop the photos `blip` remembers, so the next describe_image does the full work (benchmarks time that)."""
    memory_of(blip).photos.clear()
