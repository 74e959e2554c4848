"""Tier (c): the released checkpoints, from the Hugging Face cache. Run with: python -m pytest --real-models."""
from __future__ import annotations

import os

import numpy as np
import pytest

from music_mood.models import DEFAULT_BLIP_MODEL, DEFAULT_CLAP_MODEL

pytestmark = pytest.mark.real_models


@pytest.fixture(autouse=True)
def real_cache(monkeypatch):
    """Use the user's own Hugging Face cache (the autouse isolation points HF_HOME at a temp dir)."""
    for name in ("HF_HOME", "HF_HUB_OFFLINE"):
        if name in os.environ:
            monkeypatch.delenv(name)


def test_released_blip_captions_a_real_photo(photos):
    from image_to_vector import describe_image, open_image
    from music_mood.models import load_blip

    caption, moods = describe_image(load_blip(DEFAULT_BLIP_MODEL), open_image(photos["chelsea.png"]))
    assert "cat" in caption
    assert len(moods) == 3


def test_released_clap_ranks_calm_music_for_calm_words(clap_audio_real, sample_tracks):
    from image_to_vector import embed_text
    from music_mood.models import load_clap_text

    calm = [t for t in sample_tracks if t.parent.name == "calm"][:2]
    energetic = [t for t in sample_tracks if t.parent.name == "energetic"][:2]
    vectors = {t: clap_audio_real(t) for t in calm + energetic}
    query = embed_text(load_clap_text(DEFAULT_CLAP_MODEL), ["calm, peaceful, slow relaxing music"])[0]
    assert np.mean([vectors[t] @ query for t in calm]) > np.mean([vectors[t] @ query for t in energetic])


@pytest.fixture
def clap_audio_real():
    from music_mood.audio import decode_audio
    from music_mood.embed import embed_track
    from music_mood.models import load_clap_audio

    clap = load_clap_audio(DEFAULT_CLAP_MODEL)
    return lambda path: embed_track(clap, decode_audio(path, 48_000))[0]
