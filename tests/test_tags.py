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


def test_a_build_tags_an_old_library_from_its_vectors_alone(library_copy, clap_audio, clap_text, monkeypatch):
    """A library built before automatic tags gains them on the next build, without any audio being read, and
    its vectors and windows stay as they were; the tags equal a brute-force computation."""
    from music_mood import build
    from music_mood.tags import Tagger

    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    assert not any("auto_tags" in t for t in before.tracks)

    def no_audio(*args, **kwargs):
        raise AssertionError("audio was read to tag a track")

    monkeypatch.setattr(build, "read_track", no_audio)
    tagger = Tagger(clap_text)
    report = build.build_library(clap_audio, paths, progress=False, tagger=tagger)
    assert not report.failed and not report.added
    after = load_database(paths)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.segments, before.segments)
    for kind, vocabulary in (("mood", VOCABULARIES["mood"]), ("genre", GENRE_VOCABULARY)):
        expected = choose_tags(before.vectors, tag_text_vectors(clap_text, kind), vocabulary)
        for track, tags in zip(after.tracks, expected):
            assert track["auto_tags"]["key"] == tagger.key
            assert [t for t, _ in track["auto_tags"][kind]] == [t for t, _ in tags]


def test_stale_tags_are_made_again_and_vectors_untouched(library_copy, clap_audio, clap_text):
    import json

    from music_mood.build import build_library
    from music_mood.tags import Tagger

    paths = LibraryPaths.at(library_copy)
    tagger = Tagger(clap_text)
    build_library(clap_audio, paths, progress=False, tagger=tagger)
    meta = json.loads(paths.metadata.read_text())
    fresh = meta["tracks"][0]["auto_tags"]
    meta["tracks"][0]["auto_tags"] = {"key": "another vocabulary", "mood": [["festive", 0.9]], "genre": []}
    paths.metadata.write_text(json.dumps(meta))
    vectors = load_database(paths).vectors.copy()
    build_library(clap_audio, paths, progress=False, tagger=tagger)
    db = load_database(paths)
    assert db.tracks[0]["auto_tags"] == fresh
    np.testing.assert_array_equal(db.vectors, vectors)


def test_filters_and_explanations_use_automatic_tags_and_the_users_tag_wins(library_copy, clap_audio, clap_text,
                                                                             default_models):
    from music_mood.build import build_library
    from music_mood.display import format_library
    from music_mood.recommendation import recommend
    from music_mood.search import Filters, shared_mood_words, tag_values
    from music_mood.tags import Tagger, auto_tag_words

    paths = LibraryPaths.at(library_copy)
    build_library(clap_audio, paths, progress=False, tagger=Tagger(clap_text))
    db = load_database(paths)
    row, track = next((i, t) for i, t in enumerate(db.tracks)
                      if set(auto_tag_words(t, "mood")) - {t.get("mood", "")})
    auto_mood = next(m for m in auto_tag_words(track, "mood") if m != track.get("mood"))
    assert auto_mood in tag_values(db, "mood")
    rec = recommend(None, default_models[1], db, text="anything", topk=len(db), filters=Filters(moods=[auto_mood]),
                    max_per_artist=0)
    assert track["file_path"] in [t.file_path for t in rec.results]
    assert all(auto_mood == t.mood or auto_mood in t.auto_tags["mood"] for t in rec.results)
    assert shared_mood_words(track, [auto_mood]) == [auto_mood]
    # The folder's mood is what the table shows; a track without one shows its best automatic mood, marked.
    table = format_library(db.tracks).splitlines()
    assert track["mood"] and track["mood"] in table[row + 1] and "(auto)" not in table[row + 1]
    untagged = dict(track, mood="")
    assert f"{auto_tag_words(track, 'mood')[0]} (auto)"[:10] in format_library([untagged]).splitlines()[1]


def test_music_added_through_the_page_is_tagged(library_copy, clap_audio, clap_text, sample_tracks, tmp_path):
    import shutil

    from music_mood.tags import tagger_of
    from music_mood.uploads import add_uploads

    paths = LibraryPaths.at(library_copy)
    listed = {t["sha256"] for t in load_database(paths).tracks}
    upload = tmp_path / "upload.opus"
    shutil.copyfile(next(t for t in sample_tracks if t.name not in {p.name for p in
                                                                     (library_copy / "processed_music").rglob("*")}),
                    upload)
    result, problems = add_uploads(paths, clap_audio, [str(upload)], "calm", tagger=tagger_of(clap_text))
    assert len(result["added"]) == 1 and not problems
    db = load_database(paths)
    (new,) = [t for t in db.tracks if t["sha256"] not in listed]
    assert new["auto_tags"]["key"] == tagger_of(clap_text).key and all("auto_tags" in t for t in db.tracks)
