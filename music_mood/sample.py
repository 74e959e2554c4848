"""The bundled sample library: the 28 MIT-licensed tracks of the immich-memories-music package, copied into
new_music/<mood>/ for a build to add (`python music_to_vector.py --sample`, and the page's first start)."""
from __future__ import annotations

from pathlib import Path

from music_mood.audio import AUDIO_EXTENSIONS, file_sha256
from music_mood.library import LibraryPaths, load_database
from music_mood.storage import copy_file

SAMPLE_PACKAGE = "immich-memories-music"


def import_sample_library(paths: LibraryPaths) -> list[Path]:
    """Copy the tracks of the immich-memories-music package into new_music/<mood>/, with its licence.

    Tracks already in the library are not copied again. Returns the copied files (to pass to build_library).
    """
    try:
        import immich_memories_music
    except ImportError as e:
        raise RuntimeError(f"the sample library needs the {SAMPLE_PACKAGE} package: pip install "
                           f"{SAMPLE_PACKAGE}") from e
    from importlib import metadata

    have = set(load_database(paths).column("sha256"))
    copied = []
    for source in sorted(immich_memories_music.tracks_dir().glob("*/*")):
        if source.suffix.lower() not in AUDIO_EXTENSIONS or file_sha256(source) in have:
            continue
        target = paths.new_music / source.parent.name / source.name
        copy_file(source, target)
        copied.append(target)
    licence = next(f for f in metadata.distribution(SAMPLE_PACKAGE).files if f.name.startswith("LICENSE"))
    paths.processed_music.mkdir(parents=True, exist_ok=True)
    copy_file(Path(licence.locate()), paths.processed_music / f"{SAMPLE_PACKAGE}-{licence.name}.txt")
    return copied
