"""What the page takes as a file: only its own uploads (refuse_foreign_files, upload_paths), and the uploads it no
longer needs removed (discard_uploads)."""
from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr
from gradio_client.utils import is_file_obj, traverse

from music_mood.uploads import NotUploadedError, uploaded_file
from music_mood.web.errors import logged_as_one_line

UPLOAD_KEEP_S = 3600  # a photo can be asked about again for an hour; then Gradio removes it (checked every 10 min)
UPLOAD_SWEEP_S = 600


def refuse_foreign_files(demo) -> None:
    """Make every event of `demo` take only files inside its upload folder (uploads.uploaded_file): one check on the
    raw request, before Gradio reads, copies or preprocesses any of it, for every endpoint present or added later.
    Any other path (a file elsewhere on the server, a link or `..` leading out of the folder, a URL) is answered
    with one gr.Error that is the same whether or not the path exists.

    Why Gradio's own check is not enough (Gradio 6.31, processing_utils._check_allowed, which preprocess_data runs
    with check_in_upload_folder=True so that allowed_paths do not apply to inputs):
    - It returns without checking anything unless `blocks.has_launched`, which only launch() sets: served through
      gr.mount_gradio_app or a TestClient, a FileData path such as /var/tmp/secret.opus is copied into the cache
      and handed to the handler.
    - It exempts static files (utils.is_static_file), and its refusal reaches the client as a bare "Error".
    - The issue's reproduction never reached it at all: gradio_client's Client.predict uploads whatever local
      file a FileData dict names (Endpoint._upload_file) before calling, so a client on the server's own machine
      sends the file as a genuine upload, and the probes' three answers ("No such file", "Is a directory") were
      raised inside the client. What a client may read and upload is not the server's to decide; a path the
      server is given is, and this check decides it the same way however the app is served.
    """
    preprocess_data = demo.preprocess_data

    def check(file: dict) -> dict:
        try:
            uploaded_file(file["path"], demo.GRADIO_CACHE)
        except NotUploadedError as e:
            raise gr.Error(f"That is {e}.") from e
        return file

    @logged_as_one_line
    async def check_files(inputs) -> None:
        traverse(inputs, check, is_file_obj)  # any {"path": ...}, with or without Gradio's "meta" mark

    @functools.wraps(preprocess_data)
    async def checked(block_fn, inputs, *args, **kwargs):
        await check_files(inputs)  # logs its own refusal; Gradio's own errors below are logged where they were
        return await preprocess_data(block_fn, inputs, *args, **kwargs)

    demo.preprocess_data = checked


def upload_paths(payload) -> list[str]:
    """The uploads component's preprocess: the uploaded files' paths, for add_music to check and copy.

    Gradio's own makes an empty temporary file per upload that nothing removes, and refuses a file of another
    type with an error where add_music names that file among the others instead.
    """
    if payload is None:
        return []
    return [file.path for file in getattr(payload, "root", [payload])]  # ListFiles, or one FileData


def discard_uploads(files, upload_dir: Path, keep: set[str]) -> None:
    """Remove uploaded files the page no longer needs, and the folder Gradio made for each once it is empty.

    Only files inside Gradio's upload folder are touched, and never one in `keep`: Gradio's copy of an example
    photo is the very file an upload of the same photo lands in.
    """
    upload_dir = upload_dir.resolve()
    for file in files:
        path = Path(file)
        if str(path) in keep or not path.resolve().is_relative_to(upload_dir):
            continue
        path.unlink(missing_ok=True)
        if path.parent.resolve() != upload_dir:
            try:
                path.parent.rmdir()
            except OSError:  # another upload with the same content is still in it
                pass
