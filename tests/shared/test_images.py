"""Reading jpg/png/fits files written into tmp_path, and channel conversion."""
import logging

import numpy as np
import pytest
from PIL import Image

from zoobot.shared.errors import ChannelMismatchError, ImageLoadError, PixelScaleError
from zoobot.shared.images import load_image, reset_image_warnings, to_channels

RNG = np.random.default_rng(0)


def rgb_pixels(h=12, w=16):
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "mode, expected_channels",
    [("L", 1), ("LA", 1), ("RGB", 3), ("RGBA", 3), ("P", 3)],
)
def test_png_modes(tmp_path, mode, expected_channels):
    rgb = rgb_pixels()
    img = Image.fromarray(rgb, "RGB")
    if mode == "P":
        img = img.quantize(colors=16)
    elif mode != "RGB":
        img = img.convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 16, expected_channels)
    # lossless: equal to Pillow's own conversion of the same file
    reference = Image.open(path).convert("L" if expected_channels == 1 else "RGB")
    np.testing.assert_array_equal(out.reshape(12, 16, -1), np.asarray(reference).reshape(12, 16, -1))
    if mode == "RGBA":
        np.testing.assert_array_equal(out, rgb)  # alpha dropped, colour untouched


def test_sixteen_bit_png_scaled_to_uint8(tmp_path):
    values = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    reset_image_warnings()
    with pytest.warns(UserWarning, match="only 2x2 pixels"):
        out = load_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [100, 200]])


def test_jpg_rgb_and_greyscale(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (12, 1))
    rgb = np.stack([smooth, smooth[:, ::-1], np.full_like(smooth, 128)], axis=2)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(smooth).save(tmp_path / "g.JPEG", quality=95)
    colour, grey = load_image(tmp_path / "c.jpg"), load_image(tmp_path / "g.JPEG")
    assert colour.shape == (12, 16, 3) and grey.shape == (12, 16, 1) and colour.dtype == np.uint8
    assert np.abs(colour.astype(int) - rgb).mean() < 4  # lossy, but close
    assert np.abs(grey[:, :, 0].astype(int) - smooth).mean() < 4


@pytest.mark.parametrize(
    "target, expected",
    [(None, (256, 200)), (128, (256, 200)), (100, (128, 100)), (60, (128, 100)), (50, (64, 50)), (20, (32, 25))],
)
def test_draft_decoding_keeps_both_sides_at_least_target(tmp_path, target, expected):
    Image.fromarray(rgb_pixels(256, 200)).save(tmp_path / "big.jpg")
    out = load_image(tmp_path / "big.jpg", target_size=target)
    assert out.shape == expected + (3,)  # the largest 1/2^k reduction with both sides >= target


def test_draft_with_height_width_pair_and_png_ignores_it(tmp_path):
    Image.fromarray(rgb_pixels(256, 200)).save(tmp_path / "big.jpg")
    assert load_image(tmp_path / "big.jpg", target_size=(60, 20)).shape[:2] == (64, 50)  # 1/4 leaves 64 >= 60
    Image.fromarray(rgb_pixels(256, 200)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", target_size=30).shape[:2] == (256, 200)


def test_truncated_jpg_is_e6_naming_id_and_file(tmp_path):
    Image.fromarray(rgb_pixels(64, 64)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"id_str 'J1', file_loc '.*cut\.jpg'.*(truncated|broken)"):
        load_image(tmp_path / "cut.jpg", id_str="J1")


def test_garbage_missing_and_unsupported_files_are_e6(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match=r"file_loc '.*junk\.png': UnidentifiedImageError"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ImageLoadError, match=r"id_str 'x'.*nope\.jpg'.*no such file"):
        load_image(tmp_path / "nope.jpg", id_str="x")
    (tmp_path / "a.tiff").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"a\.tiff'.*unsupported extension.*\.fits"):
        load_image(tmp_path / "a.tiff")
    assert issubclass(ImageLoadError, OSError)


def test_unknown_fits_scaling_is_e13(tmp_path):
    with pytest.raises(ValueError, match="Unknown fits_scaling 'percentil'"):
        load_image(tmp_path / "x.fits", fits_scaling="percentil")


# ------------------------------------------------------------------ FITS
fits = pytest.importorskip("astropy.io.fits")


def test_fits_2d_percentile_scaling(tmp_path):
    data = np.arange(400, dtype=np.float32).reshape(20, 20) - 100
    fits.PrimaryHDU(data).writeto(tmp_path / "g.fits")
    out = load_image(tmp_path / "g.fits")
    low, high = np.percentile(data, [0.5, 99.5])
    expected = np.clip((data - low) / (high - low), 0, 1)
    assert out.dtype == np.float32 and out.shape == (20, 20, 1)
    np.testing.assert_allclose(out[:, :, 0], expected, atol=1e-6)


def test_fits_cube_minmax_nan_and_first_hdu_with_data(tmp_path):
    cube = RNG.normal(size=(3, 8, 10)).astype(">f4")  # big-endian, as FITS stores it
    cube[1, 2, 3] = np.nan
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube)])  # empty primary, data in HDU 1
    hdul.writeto(tmp_path / "cube.fits.gz")
    out = load_image(tmp_path / "cube.fits.gz", fits_scaling="minmax")
    finite = cube[np.isfinite(cube)]
    expected = (np.moveaxis(cube.astype(np.float64), 0, -1) - finite.min()) / (finite.max() - finite.min())
    assert out.shape == (8, 10, 3)
    assert out[2, 3, 1] == 0.0  # NaN -> 0
    expected[2, 3, 1] = 0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_fits_none_scaling_requires_unit_range(tmp_path):
    fits.PrimaryHDU(np.full((4, 4), 0.25)).writeto(tmp_path / "ok.fit")
    reset_image_warnings()
    with pytest.warns(UserWarning, match="pixels all equal 0.25"):
        np.testing.assert_allclose(load_image(tmp_path / "ok.fit", fits_scaling="none"), 0.25)
    fits.PrimaryHDU(np.arange(16.0).reshape(4, 4) / 5).writeto(tmp_path / "bad.fits")
    with pytest.raises(PixelScaleError, match=r"expects floats in \[0, 1\].*\[0, 3\]"):
        load_image(tmp_path / "bad.fits", fits_scaling="none")


def test_fits_errors(tmp_path):
    fits.HDUList([fits.PrimaryHDU()]).writeto(tmp_path / "empty.fits")
    with pytest.raises(ImageLoadError, match=r"id_str 'e'.*empty\.fits.*none of its 1 HDU\(s\) holds image data"):
        load_image(tmp_path / "empty.fits", id_str="e")
    fits.PrimaryHDU(np.zeros((4, 5, 6))).writeto(tmp_path / "four.fits")
    with pytest.raises(ChannelMismatchError, match=r"got shape \(4, 5, 6\) \(expected C in \{1, 3\}, got C=4\)"):
        load_image(tmp_path / "four.fits")
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE junk" * 10)
    with pytest.raises(ImageLoadError, match=r"junk\.fits"):
        load_image(tmp_path / "junk.fits")


# ------------------------------------------------------------------ channels
def test_to_channels_rgb_to_grey_is_unweighted_mean():
    rgb = np.array([[[0, 30, 61], [255, 255, 254]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_channels(rgb, 1)[:, :, 0], [[30, 255]])  # 91/3=30.33, 764/3=254.67
    floats = rgb.astype(np.float32) / 255
    np.testing.assert_allclose(to_channels(floats, 1)[:, :, 0], floats.mean(axis=2))
    assert to_channels(floats, 1).dtype == np.float32


def test_to_channels_grey_to_rgb_repeats_and_logs_once(caplog):
    import zoobot.shared.images as images

    images._logged_grey_to_colour = False
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    with caplog.at_level(logging.INFO, logger="zoobot.shared.images"):
        out = to_channels(grey, 3)
        to_channels(grey[:, :, 0], 3)
    assert out.shape == (2, 3, 3) and (out == grey).all()
    assert sum("repeated to 3 channels" in r.message for r in caplog.records) == 1


def test_to_channels_errors():
    with pytest.raises(ChannelMismatchError, match=r"got shape \(2, 2, 4\)"):
        to_channels(np.zeros((2, 2, 4)), 3)
    with pytest.raises(ChannelMismatchError, match=r"got shape \(2, 2, 2\).*greyscale= / color="):
        to_channels(np.zeros((2, 2, 2)), 1)
    with pytest.raises(ValueError, match="channels must be 1"):
        to_channels(np.zeros((2, 2, 3)), 2)


def test_minimum_decode_size():
    from zoobot.shared.images import minimum_decode_size

    assert minimum_decode_size(224) == 224
    assert minimum_decode_size(224, 0.7, 1.1) == 281  # 224 / sqrt(0.7 / 1.1) = 280.8
    assert minimum_decode_size(100, 0.25) == 200
    with pytest.raises(ValueError, match=r"min_crop_area_fraction must be in \(0, 1\]"):
        minimum_decode_size(224, 0)


def test_fits_without_astropy_is_e12(tmp_path, monkeypatch):
    from zoobot.shared.errors import MissingDependencyError

    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "g.fits")
    for name in ("astropy", "astropy.io", "astropy.io.fits"):
        monkeypatch.setitem(__import__("sys").modules, name, None)  # simulate an environment without astropy
    with pytest.raises(MissingDependencyError, match=r'Reading FITS images needs .*astropy.*pip install "zoobot\[fits\]"'):
        load_image(tmp_path / "g.fits")


def test_a_tiny_image_warns_once_naming_the_first_file(tmp_path):
    """Issue 12.9: a 1x1 cutout is read (and would be resized like any image) but warns, once per process."""
    for name in ("one.png", "two.png"):
        Image.fromarray(rgb_pixels(1, 1)).save(tmp_path / name)
    Image.fromarray(rgb_pixels(4, 4)).save(tmp_path / "small_but_fine.png")
    reset_image_warnings()
    with pytest.warns(UserWarning) as caught:
        assert load_image(tmp_path / "one.png", id_str="g1").shape == (1, 1, 3)
        load_image(tmp_path / "two.png")
        load_image(tmp_path / "small_but_fine.png")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "id_str 'g1'" in messages[0] and "one.png" in messages[0] and "only 1x1 pixels" in messages[0]


def test_a_constant_fits_image_warns_once_naming_the_first_file(tmp_path):
    """Issue 12.9: a FITS image of one value is blank after any stretch; it warns, once per process."""
    for name, value in (("flat.fits", 7.5), ("also_flat.fits", 0.0)):
        fits.PrimaryHDU(np.full((8, 8), value, dtype=np.float32)).writeto(tmp_path / name)
    varied = np.arange(64, dtype=np.float32).reshape(8, 8)
    fits.PrimaryHDU(varied).writeto(tmp_path / "varied.fits")
    reset_image_warnings()
    with pytest.warns(UserWarning) as caught:
        load_image(tmp_path / "flat.fits", id_str="g7")
        load_image(tmp_path / "also_flat.fits")
        load_image(tmp_path / "varied.fits")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "id_str 'g7'" in messages[0] and "flat.fits" in messages[0] and "pixels all equal 7.5" in messages[0]
