"""Resident memory of a process holding what the app holds (BLIP + CLAP's text tower), after warm-up queries.

    python -m benchmarks.bench_memory                    # the default precision
    python -m benchmarks.bench_memory --precision int8
    python -m benchmarks.bench_memory --quick            # one warm-up query instead of three
"""
from __future__ import annotations

import argparse

from benchmarks.common import current_rss_mb, full_checkpoints, peak_rss_mb, photo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one warm-up query")
    parser.add_argument("--precision", default=None, help="models' precision (default: the product's default)")
    args = parser.parse_args(argv)
    checkpoints = full_checkpoints()  # built (or found) before anything is measured

    from benchmarks.bench_query import LIBRARY_SIZE, synthetic_database
    from music_mood.models import default_precision, load_blip, load_clap_text, release_freed_memory
    from recommend import recommend

    precision = args.precision or default_precision()
    base = current_rss_mb()
    blip = load_blip(checkpoints["blip"], precision)
    clap = load_clap_text(checkpoints["clap"], precision)
    loaded = current_rss_mb()
    db = synthetic_database(LIBRARY_SIZE, clap.model.config.projection_dim)
    for _ in range(1 if args.quick else 3):
        recommend(blip, clap, db, image=photo())
        release_freed_memory()  # as app.py's Recommend handler does after every request
    print(f"precision {precision}: RSS {base:.0f} MB before loading, {loaded:.0f} MB with BLIP + CLAP text loaded, "
          f"{current_rss_mb():.0f} MB after warm-up queries ({LIBRARY_SIZE} tracks, "
          f"{db.vectors.nbytes / 2**20:.0f} MB); "
          f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"after warm-up: RssAnon {current_rss_mb('RssAnon'):.0f} MB, RssFile {current_rss_mb('RssFile'):.0f} MB "
          f"(file pages are mapped weights and libraries, shared and reclaimable)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
