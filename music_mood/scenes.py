"""Scenes of a photo set: where the photos' queries change enough to start new music (split_scenes), and the
mood words a scene's photos share."""
from __future__ import annotations

import math

import numpy as np

from music_mood.describe import MOOD_WORDS_PER_IMAGE

# A scene is at least this long: shorter, its music would be little more than its cross-fades.
MIN_SCENE_S = 8.0
MIN_SCENE_PHOTOS = 2
# A neighbour pair's cosine must fall this far below the set's typical neighbour cosine to start a scene ...
SCENE_MIN_DROP = 0.1
# ... and this many (robust) standard deviations of the set's neighbour cosines below it.
SCENE_SPREADS = 3.0


def scene_min_photos(seconds_per_photo: float) -> int:
    """The fewest photos a scene has: MIN_SCENE_PHOTOS, and enough to last MIN_SCENE_S."""
    return max(MIN_SCENE_PHOTOS, math.ceil(MIN_SCENE_S / seconds_per_photo - 1e-9))


def split_scenes(vectors: np.ndarray, min_photos: int = MIN_SCENE_PHOTOS, min_drop: float = SCENE_MIN_DROP,
                 spreads: float = SCENE_SPREADS) -> list[range]:
    """Consecutive scenes of photos, as ranges of row indices, from their unit query vectors float32 (n, D).

    The rule: s_i is the cosine between photo i and photo i + 1; the set's typical neighbour cosine is the median
    of the s_i, and their spread is 1.4826 x their median absolute deviation from it (a standard deviation that
    the scene changes themselves do not inflate). A pair is a change of scene when its s_i lies more than
    max(min_drop, spreads x spread) below the typical cosine. Changes are taken deepest first, each only if every
    scene keeps at least `min_photos` photos; a set without one (a uniform set, or one shorter than
    2 x min_photos) is one scene. With min_photos >= 2, fewer than half the pairs can be changes, so the median
    stays a within-scene cosine.
    """
    n = len(vectors)
    if n == 0:
        return []
    vectors = np.asarray(vectors, dtype=np.float64)
    similarity = np.einsum("ij,ij->i", vectors[:-1], vectors[1:])  # (n - 1,): photo i against photo i + 1
    starts = [0]
    if n >= 2 * min_photos:
        typical = float(np.median(similarity))
        spread = 1.4826 * float(np.median(np.abs(similarity - typical)))
        drop = typical - similarity
        threshold = max(min_drop, spreads * spread)
        for pair in np.argsort(-drop, kind="stable"):  # deepest first; ties: the earlier pair
            if drop[pair] <= threshold:
                break
            start = int(pair) + 1  # the new scene's first photo
            before = max((s for s in starts if s < start), default=0)
            after = min((s for s in starts if s > start), default=n)
            if start - before >= min_photos and after - start >= min_photos:
                starts.append(start)
        starts.sort()
    return [range(start, end) for start, end in zip(starts, [*starts[1:], n])]


def shared_words(word_lists: list[list[str]], k: int = MOOD_WORDS_PER_IMAGE) -> list[str]:
    """The words that at least half of the lists (each best first) hold, most common first; ties go to the word
    placed better on average, then to the one seen first. When no word is that common, the k most common ones."""
    count: dict[str, int] = {}
    places: dict[str, int] = {}
    for words in word_lists:
        for place, word in enumerate(words):
            count[word] = count.get(word, 0) + 1
            places[word] = places.get(word, 0) + place
    ranked = sorted(count, key=lambda w: (-count[w], places[w] / count[w]))  # sorted is stable: first seen first
    common = [word for word in ranked if 2 * count[word] >= len(word_lists)]
    return common or ranked[:k]
