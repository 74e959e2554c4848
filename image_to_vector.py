"""The query side: image → caption → mood words chosen for that image → CLAP text vector.

The work is done by the music_mood package: images.py opens a photo, describe.py captions it and chooses its mood
words, query.py composes the text and embeds it with CLAP. The names users import from here are re-exported.
"""
from __future__ import annotations

from music_mood.describe import (
                                 MAX_CAPTION_TOKENS,
                                 MOOD_PROMPT_PREFIX,
                                 MOOD_VOCABULARY,
                                 MOOD_WORDS_PER_IMAGE,
                                 cache_dir,
                                 caption_image,
                                 choose_mood_words,
                                 describe_image,
                                 forget_descriptions,
                                 memory_of,
                                 neutral_mood_scores,
)
from music_mood.images import ImageError, open_image
from music_mood.query import Query, compose_query_text, embed_text, image_to_query

__all__ = ["MAX_CAPTION_TOKENS", "MOOD_PROMPT_PREFIX", "MOOD_VOCABULARY", "MOOD_WORDS_PER_IMAGE", "ImageError",
           "Query", "cache_dir", "caption_image", "choose_mood_words", "compose_query_text", "describe_image",
           "embed_text", "forget_descriptions", "image_to_query", "memory_of", "neutral_mood_scores", "open_image"]
