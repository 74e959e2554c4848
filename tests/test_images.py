"""open_image: every kind of real-world image becomes upright 8-bit RGB, and bad input is refused clearly."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from image_to_vector import ImageError, open_image


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(photos, tmp_path):
    photo = Image.open(photos["chelsea.png"]).convert("RGB")  # 451 x 300, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": phones write this for portrait shots
    path = _save(photo, tmp_path / "portrait.jpg", exif=exif.tobytes())
    opened = open_image(path)
    assert opened.mode == "RGB"
    assert opened.size == (photo.height, photo.width)
    expected = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(np.asarray(opened, dtype=float) - expected).mean() < 8  # only JPEG loss


@pytest.mark.parametrize("mode", ["CMYK", "L", "1", "YCbCr"])
def test_other_colour_modes_become_rgb(photos, tmp_path, mode):
    image = Image.open(photos["astronaut.png"]).convert(mode)
    opened = open_image(_save(image, tmp_path / "x.tif" if mode != "YCbCr" else tmp_path / "x.jpg"))
    assert opened.mode == "RGB" and opened.size == image.size
    assert np.asarray(opened).std() > 10  # still a picture, not a blank


def test_transparent_pixels_become_white(photos, tmp_path):
    rgba = Image.open(photos["coffee.png"]).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, : rgba.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    opened = np.asarray(open_image(_save(rgba, tmp_path / "half.png")))
    assert (opened[:, : rgba.width // 2] == 255).all()
    assert not (opened[:, rgba.width // 2 + 1:] == 255).all()


def test_palette_with_transparency(photos, tmp_path):
    palette = Image.open(photos["rocket.jpg"]).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    opened = open_image(_save(palette, tmp_path / "p.png", transparency=0))
    assert opened.mode == "RGB" and opened.size == palette.size


def test_sixteen_bit_greyscale_keeps_its_contrast(photos, tmp_path):
    grey = np.asarray(Image.open(photos["astronaut.png"]).convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    path = _save(Image.fromarray(grey), tmp_path / "deep.png")
    opened = np.asarray(open_image(path))
    assert opened.shape[2] == 3
    assert np.abs(opened[..., 0].astype(int) - grey // 257).max() <= 1


def test_animated_image_gives_first_frame(tmp_path, photos):
    frames = [Image.open(photos["coffee.png"]).convert("RGB").resize((64, 48)),
              Image.new("RGB", (64, 48), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    opened = np.asarray(open_image(path), dtype=float)
    assert opened[..., 2].mean() < 200  # not the blue second frame


def test_accepts_bytes_arrays_and_pil(photos):
    data = photos["rocket.jpg"].read_bytes()
    from_bytes = open_image(data)
    assert np.array_equal(np.asarray(from_bytes), np.asarray(open_image(np.asarray(from_bytes))))
    assert open_image(Image.open(io.BytesIO(data))).size == from_bytes.size


def test_non_image_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="is not an image"):
        open_image(path)


def test_truncated_file_is_refused(photos, tmp_path):
    data = photos["rocket.jpg"].read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        open_image(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "nowhere.png")


@pytest.mark.parametrize("as_text", [False, True])
def test_directory_is_refused_as_a_directory(tmp_path, as_text):
    folder = tmp_path / "holiday photos"
    folder.mkdir()
    with pytest.raises(ImageError) as refused:
        open_image(str(folder) if as_text else folder)
    assert str(refused.value) == f"{folder} is a directory, not an image file"


@pytest.mark.parametrize("factor", [1.5, 3])  # Pillow warns at 1-2x its limit and raises above 2x
def test_decompression_bomb_is_refused(photos, monkeypatch, factor):
    image = Image.open(photos["astronaut.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(image.width * image.height / factor))
    with pytest.raises(ImageError, match="too large"):
        open_image(photos["astronaut.png"])
