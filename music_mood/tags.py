"""Automatic mood and genre tags for tracks, from their stored CLAP vectors alone (zero-shot, as CLAP is evaluated):
each tag is a CLAP text vector (its prompt templates averaged), scored against the track's vector; no audio is
decoded or embedded again."""
from __future__ import annotations

import numpy as np

from music_mood.describe import MOOD_VOCABULARY

# The genres a track can be tagged with: broad families a music library is browsed by, each named as CLAP's
# training captions name it. Changing this list (or the templates) makes stored automatic tags stale.
GENRE_VOCABULARY = (
    "ambient", "classical", "jazz", "blues", "rock", "metal", "punk", "pop", "indie", "folk",
    "country", "electronic", "house", "techno", "drum and bass", "hip hop", "r&b", "soul", "funk", "disco",
    "reggae", "latin", "world music", "cinematic orchestral", "lo-fi", "chillout", "acoustic", "piano",
    "singer-songwriter", "choir",
)  # fmt: skip
# Several phrasings per tag, averaged: a single prompt's wording would weigh on the scores (CLAP's zero-shot
# evaluation averages templates the same way).
PROMPT_TEMPLATES = {
    "mood": ("{} music", "a {} song", "this music sounds {}", "a piece of music with a {} mood"),
    "genre": ("{} music", "a {} song", "this is a {} track", "a recording of {} music"),
}
VOCABULARIES = {"mood": MOOD_VOCABULARY, "genre": GENRE_VOCABULARY}
TAGS_PER_TRACK = 3
# A tag is kept when its score stands this many standard deviations above the mean of the vocabulary's scores
# for that track: CLAP's audio-text cosines sit in a narrow band whose level depends on the checkpoint, so a
# threshold relative to the track's own scores carries over between checkpoints where an absolute one would not.
MIN_Z_SCORE = 1.0


def tag_text_vectors(clap_text, kind: str) -> np.ndarray:
    """float32 (V, D): for each tag of VOCABULARIES[kind], the mean of its prompts' unit CLAP text vectors,
    normalised again. `clap_text` is a loaded CLAP text model (models.load_clap_text)."""
    from music_mood.query import embed_text

    vocabulary, templates = VOCABULARIES[kind], PROMPT_TEMPLATES[kind]
    vectors = embed_text(clap_text, [template.format(tag) for tag in vocabulary for template in templates])
    means = vectors.reshape(len(vocabulary), len(templates), -1).mean(axis=1)
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def choose_tags(track_vectors: np.ndarray, tag_vectors: np.ndarray, vocabulary,
                k: int = TAGS_PER_TRACK, min_z: float = MIN_Z_SCORE) -> list[list[tuple[str, float]]]:
    """For each track (unit float32 rows (N, D)), up to k (tag, cosine) pairs, best first: the tags whose cosine
    is at least `min_z` standard deviations above the mean of that track's cosines to the whole vocabulary.
    Ties keep vocabulary order."""
    scores = np.asarray(track_vectors, dtype=np.float32) @ tag_vectors.T  # (N, V)
    mean, std = scores.mean(axis=1, keepdims=True), scores.std(axis=1, keepdims=True)
    z = (scores - mean) / np.maximum(std, 1e-12)
    chosen = []
    for row, z_row in zip(scores, z):
        order = np.argsort(-row, kind="stable")[:k]
        chosen.append([(vocabulary[i], round(float(row[i]), 4)) for i in order if z_row[i] >= min_z])
    return chosen


def tags_key(clap_model: str) -> str:
    """What stored automatic tags depend on (the CLAP checkpoint, vocabularies, templates and choice rule): a
    track whose tags carry another key gets them again, from its stored vector."""
    import hashlib
    import json

    made_by = {"clap_model": clap_model, "vocabularies": VOCABULARIES, "templates": PROMPT_TEMPLATES,
               "k": TAGS_PER_TRACK, "min_z": MIN_Z_SCORE}
    return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:16]


class Tagger:
    """Tags tracks from their stored vectors: the tag vectors of one CLAP text model, computed once."""

    def __init__(self, clap_text):
        self.key = tags_key(clap_text.name)
        self.vectors = {kind: tag_text_vectors(clap_text, kind) for kind in VOCABULARIES}

    def tag(self, vectors: np.ndarray) -> list[dict]:
        """For unit track vectors (N, D): each track's automatic tags as stored in its record, {"key": ...,
        "mood": [[tag, cosine], ...], "genre": [...]}, best first."""
        chosen = {kind: choose_tags(vectors, self.vectors[kind], VOCABULARIES[kind]) for kind in VOCABULARIES}
        return [{"key": self.key, **{kind: [[tag, score] for tag, score in chosen[kind][i]] for kind in VOCABULARIES}}
                for i in range(len(vectors))]

    def stale(self, track: dict) -> bool:
        return (track.get("auto_tags") or {}).get("key") != self.key


def auto_tag_words(track: dict, kind: str) -> list[str]:
    """A track record's automatic tags of one kind ("mood", "genre"), best first; [] when it has none."""
    return [tag for tag, _ in (track.get("auto_tags") or {}).get(kind, [])]


def tagger_of(clap_text) -> Tagger:
    """The Tagger of a loaded CLAP text model, made once and kept in the model's memory (its tag vectors cost
    a few hundred text embeddings)."""
    if "tagger" not in clap_text.memory:
        clap_text.memory["tagger"] = Tagger(clap_text)
    return clap_text.memory["tagger"]
