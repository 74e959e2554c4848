"""A photo and/or words → the query: the caption and mood words that explain it, the exact text, its CLAP vector."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from music_mood.describe import MAX_CAPTION_TOKENS, describe_image
from music_mood.images import open_image


@dataclass
class Query:
    """What a photo and/or text became: the explanation shown to the user and the CLAP vector, float32 (D,)."""

    caption: str
    mood_words: list[str]
    query_text: str
    vector: np.ndarray


def compose_query_text(caption: str = "", mood_words=(), text: str = "") -> str:
    """The exact text CLAP embeds: the user's words, the caption, then the mood words.

    Never empty when there are mood words, so an empty caption still gives a usable query.
    """
    parts = [part.strip() for part in (text, caption) if part and part.strip()]
    if mood_words:
        parts.append(f"{', '.join(mood_words)} mood")
    return "; ".join(parts)


def embed_text(clap, texts) -> np.ndarray:
    """CLAP text embeddings for a list of strings: float32 (n, D), each row L2-normalised."""
    return clap.runtime.embed_text(list(texts))


def image_to_query(blip, clap, image=None, text: str = "", max_caption_tokens: int = MAX_CAPTION_TOKENS,
                   min_caption_tokens: int = 0) -> Query:
    """Turn an image and/or a text into one CLAP query vector, with the caption and mood words that explain it.

    `image` is anything open_image accepts, or None for a text-only query (then `blip` may be None). The caption
    is at most `max_caption_tokens` tokens long and at least `min_caption_tokens` (benchmarks fix its length).
    """
    if image is None and not (text and text.strip()):
        raise ValueError("give an image, a text, or both")
    caption, mood_words = "", []
    if image is not None:
        caption, mood_words = describe_image(blip, open_image(image), max_caption_tokens, min_caption_tokens)
    query_text = compose_query_text(caption, mood_words, text)
    return Query(caption=caption, mood_words=mood_words, query_text=query_text,
                 vector=embed_text(clap, [query_text])[0])
