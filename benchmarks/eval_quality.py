"""Recommendation quality on the 28 mood-labelled sample tracks (immich-memories-music: calm, energetic, happy,
nostalgic, tender): mood precision@k of text queries for each mood, under three ways of writing the query, and how
well the automatic mood tags (music_mood.tags) agree with the folder labels.

Query variants, for a mood m: "seed" = "m, atmospheric, mood, cinematic" (the seed's fixed suffix after the
description), "caption only" = "m music", "caption + mood words" = the product's query text for caption
"m music" and mood word m ("m music; m mood"). precision@k = the share of the top k tracks whose folder is m.

With the random-weight checkpoints built here the figures are chance (it says so); they mean something with the
released checkpoints:

    python -m benchmarks.eval_quality                      # full-size random-weight models: proves it runs
    python -m benchmarks.eval_quality --real-models        # laion/clap-htsat-unfused from the Hugging Face cache
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np

from benchmarks.common import full_checkpoints
from music_mood.query import compose_query_text

SEED_SUFFIX = ", atmospheric, mood, cinematic"
VARIANTS = {
    "seed": lambda mood: mood + SEED_SUFFIX,
    "caption only": lambda mood: f"{mood} music",
    "caption + mood words": lambda mood: compose_query_text(f"{mood} music", [mood]),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--real-models", action="store_true",
                        help="use the released CLAP checkpoint from the Hugging Face cache")
    parser.add_argument("--clap-model", default=None, help="any CLAP checkpoint (overrides --real-models)")
    parser.add_argument("-k", type=int, default=5, help="precision@k")
    args = parser.parse_args(argv)

    from music_mood.build import build_library
    from music_mood.library import LibraryPaths, load_database
    from music_mood.models import DEFAULT_CLAP_MODEL, load_clap_audio, load_clap_text
    from music_mood.sample import import_sample_library
    from music_mood.tags import MOOD_VOCABULARY, choose_tags, tag_text_vectors

    random_weights = not (args.clap_model or args.real_models)
    clap_model = args.clap_model or (DEFAULT_CLAP_MODEL if args.real_models else full_checkpoints()["clap"])
    with tempfile.TemporaryDirectory(prefix="eval_quality.") as folder:
        paths = LibraryPaths.at(folder)
        build_library(load_clap_audio(clap_model), paths, files=import_sample_library(paths), progress=False)
        db = load_database(paths)
    labels = [t["mood"] for t in db.tracks]
    moods = sorted(set(labels))
    clap = load_clap_text(clap_model)
    print(f"CLAP {clap_model} ({clap.embedded_by}); {len(db)} tracks, moods {', '.join(moods)}")
    if random_weights:
        print("RANDOM-WEIGHT MODELS: the figures below are chance; they only show that the evaluation runs. "
              "Run with --real-models for real figures.")

    vectors = np.asarray(db.vectors)
    print(f"\nmood precision@{args.k} of text queries (chance: about {1 / len(moods):.2f})")
    print(f"{'variant':22} " + " ".join(f"{m:>10}" for m in moods) + f" {'mean':>8}")
    for name, write in VARIANTS.items():
        queries = clap.runtime.embed_text([write(m) for m in moods])
        precision = []
        for mood, query in zip(moods, queries):
            top = np.argsort(-(vectors @ query), kind="stable")[:args.k]
            precision.append(np.mean([labels[i] == mood for i in top]))
        print(f"{name:22} " + " ".join(f"{p:>10.2f}" for p in precision) + f" {np.mean(precision):>8.2f}")

    # Automatic mood tags against the folder labels: the best-scoring label among the library's own moods.
    tag_vectors = tag_text_vectors(clap, "mood")
    label_rows = [MOOD_VOCABULARY.index(m) for m in moods]
    best = [moods[i] for i in np.argmax(vectors @ tag_vectors[label_rows].T, axis=1)]
    kept = choose_tags(vectors, tag_vectors, MOOD_VOCABULARY)
    print("\nautomatic mood tag (best of the library's moods) against the folder label; rows: folder, columns: tag")
    print(f"{'':12}" + "".join(f"{m:>11}" for m in moods))
    for mood in moods:
        counts = [sum(1 for label, tag in zip(labels, best) if label == mood and tag == other) for other in moods]
        print(f"{mood:12}" + "".join(f"{c:>11}" for c in counts))
    agreement = np.mean([label == tag for label, tag in zip(labels, best)])
    in_kept = np.mean([label in [t for t, _ in tags] for label, tags in zip(labels, kept)])
    print(f"agreement {agreement:.2f} (chance about {1 / len(moods):.2f}); the folder's mood is among a track's "
          f"kept automatic tags (of all {len(MOOD_VOCABULARY)} moods) for {in_kept:.0%} of tracks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
