"""Opening a photo safely: any path, bytes, array or PIL image → an upright 8-bit RGB image, or an ImageError."""
from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """The input is not an image we can read safely; the message says why."""


def open_image(source, fit_box: tuple[int, int] | None = None) -> Image.Image:
    """Open a path, bytes, numpy array or PIL image as an upright 8-bit RGB image.

    EXIF orientation is applied; CMYK, alpha, palette, 16-bit and float images are converted; an animated image
    gives its first frame. A directory, a non-image, a truncated file or a decompression bomb raises ImageError.
    fit_box=(width, height): the image will be shown fitted into this box, so a JPEG may be decoded at 1/2, 1/4 or
    1/8 of its size (libjpeg's scaled decoding: a 12-megapixel photo for 720p opens 4× faster) as long as it is
    still at least as large as it will be shown, whichever way its EXIF orientation turns it.
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the image"
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        # Pillow would fail with "[Errno 21] Is a directory", which reads as a damaged file.
        raise ImageError(f"{name} is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a bomb is refused outright.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                image = source
            elif isinstance(source, np.ndarray):
                image = Image.fromarray(source)
            elif isinstance(source, (bytes, bytearray)):
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(source)
            image.seek(0)
            if fit_box is not None and image.format == "JPEG":
                width, height = fit_box
                scale = max(min(width / image.width, height / image.height),  # as stored
                            min(width / image.height, height / image.width))  # turned a quarter
                image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} is too large to open safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image (Pillow cannot identify it)") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name} does not exist") from e
    except (OSError, ValueError, TypeError, SyntaxError) as e:  # Pillow's truncated/corrupt-data errors
        raise ImageError(f"{name} is truncated or corrupt ({e})") from e
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        brightest = pixels.max(initial=0)
        top = 1.0 if image.mode == "F" and brightest <= 1.0 else 255.0 if brightest <= 255 else 65535.0
        gray = np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        # Transparent areas become white, as an image viewer shows them, not the black of a raw drop.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
