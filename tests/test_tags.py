"""Automatic tags from stored vectors: the tag vectors and the chosen tags equal a brute-force computation."""
from __future__ import annotations

import numpy as np
import pytest

from music_mood.library import LibraryPaths, load_database
from music_mood.tags import (
    GENRE_VOCABULARY,
    MIN_Z_SCORE,
    PROMPT_TEMPLATES,
    TAGS_PER_TRACK,
    VOCABULARIES,
    choose_tags,
    tag_text_vectors,
)


@pytest.mark.parametrize("kind", ["mood", "genre"])
def test_tag_vectors_are_their_prompts_averaged(clap_text, kind):
    vectors = tag_text_vectors(clap_text, kind)
    assert vectors.shape == (len(VOCABULARIES[kind]), clap_text.runtime.dim) and vectors.dtype == np.float32
    for i in (0, len(VOCABULARIES[kind]) - 1):
        prompts = [template.format(VOCABULARIES[kind][i]) for template in PROMPT_TEMPLATES[kind]]
        alone = np.stack([clap_text.runtime.embed_text([prompt])[0] for prompt in prompts]).mean(axis=0)
        np.testing.assert_allclose(vectors[i], alone / np.linalg.norm(alone), atol=1e-5)


def test_tags_of_a_library_equal_brute_force(built_library, clap_text):
    db = load_database(LibraryPaths.at(built_library))
    tag_vectors = tag_text_vectors(clap_text, "genre")
    chosen = choose_tags(db.vectors, tag_vectors, GENRE_VOCABULARY)
    assert len(chosen) == len(db)
    for row, tags in zip(np.asarray(db.vectors), chosen):
        cosines = [float(row @ tag) for tag in tag_vectors]
        mean, std = np.mean(cosines), np.std(cosines)
        ranked = sorted(range(len(cosines)), key=lambda i: (-cosines[i], i))[:TAGS_PER_TRACK]
        expected = [(GENRE_VOCABULARY[i], round(cosines[i], 4)) for i in ranked
                    if (cosines[i] - mean) / std >= MIN_Z_SCORE - 1e-6]
        assert [t for t, _ in tags] == [t for t, _ in expected]
        np.testing.assert_allclose([s for _, s in tags], [s for _, s in expected], atol=1e-4)


def test_a_tag_far_above_the_rest_is_the_only_one():
    vocabulary = ("calm", "epic", "dark", "warm")
    tags = np.eye(4, dtype=np.float32)
    track = np.array([[0.9, 0.1, 0.1, 0.1]], dtype=np.float32)
    assert choose_tags(track / np.linalg.norm(track), tags, vocabulary) == [[("calm", round(0.9 / 0.84 ** 0.5, 4))]]
    flat = np.full((1, 4), 0.5, dtype=np.float32)  # no tag stands out: none is kept
    assert choose_tags(flat, tags, vocabulary) == [[]]
