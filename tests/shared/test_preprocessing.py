"""The preprocessing record and its resolution (zoobot.shared.preprocessing; issue 12; docs/reliability.md).

FITS scalings are checked against hand computations (numpy percentiles, the asinh formula), the record
against a JSON round trip, and :func:`resolve_preprocessing` for its three warnings.
"""
import json
import warnings

import numpy as np
import pytest

from zoobot.shared.images import load_image
from zoobot.shared.preprocessing import (
    FITS_SCALINGS,
    FitsScaling,
    Preprocessing,
    resolve_preprocessing,
    restore_record,
)

RECORD = Preprocessing(input_size=64, channels=3, crop_scale_bounds=(0.7, 0.8), crop_ratio_bounds=(0.9, 1.1),
                       image_formats=("jpg",))


def _write_fits(path, data):
    from astropy.io import fits

    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


# ---------------------------------------------------------------------------------------------- FITS scaling


def test_default_percentile_scaling_is_todays_linear_stretch(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.lognormal(size=(3, 20, 20))
    data[0, 0, 0] = np.nan
    finite = data[np.isfinite(data)]
    low, high = np.percentile(finite, (0.5, 99.5))
    expected = np.clip((data - low) / (high - low), 0, 1)
    expected[0, 0, 0] = 0.0
    out = load_image(_write_fits(tmp_path / "a.fits", data))
    np.testing.assert_allclose(out, np.moveaxis(expected, 0, -1), atol=1e-6)


def test_asinh_stretch_matches_the_formula(tmp_path):
    data = np.linspace(0, 10, 100).reshape(10, 10)
    scaling = FitsScaling(interval="manual", vmin=0.0, vmax=10.0, stretch="asinh", a=0.2)
    out = load_image(_write_fits(tmp_path / "b.fits", data), fits_scaling=scaling)[..., 0]
    x = data / 10.0
    np.testing.assert_allclose(out, np.arcsinh(x / 0.2) / np.arcsinh(1 / 0.2), atol=1e-6)
    # the named preset: percentile limits, then asinh with a = 0.1
    preset = load_image(tmp_path / "b.fits", fits_scaling="asinh")[..., 0]
    low, high = np.percentile(data, (0.5, 99.5))
    y = np.clip((data - low) / (high - low), 0, 1)
    np.testing.assert_allclose(preset, np.arcsinh(y / 0.1) / np.arcsinh(10.0), atol=1e-6)


def test_fits_scaling_accepts_names_dicts_and_objects():
    assert FitsScaling.from_value("minmax") == FITS_SCALINGS["minmax"]
    assert FitsScaling.from_value({"stretch": "log"}).a == 1000.0
    assert FitsScaling.from_value(FitsScaling.from_value("asinh").to_dict()) == FITS_SCALINGS["asinh"]
    with pytest.raises(ValueError, match="Unknown fits_scaling 'asinhh'.*Did you mean"):
        FitsScaling.from_value("asinhh")
    with pytest.raises(ValueError, match="Unknown FITS stretch 'cubic'"):
        FitsScaling(stretch="cubic")
    with pytest.raises(ValueError, match="interval='manual' needs vmin < vmax"):
        FitsScaling(interval="manual", vmin=1.0)


# ---------------------------------------------------------------------------------------------- record


def test_record_round_trips_through_json():
    record = Preprocessing.for_training(96, 1, (0.6, 0.9), (0.8, 1.2), ["a.fits", "b.png"], "asinh")
    stored = json.loads(json.dumps(record.to_dict()))
    assert Preprocessing.from_dict(stored) == record
    assert stored["uint8_scaling"] == "uint8 / 255" and stored["eval_crop_area_fraction"] == pytest.approx(0.75)
    assert stored["fits_scaling"]["stretch"] == "asinh" and stored["image_formats"] == ["fits", "png"]
    # no FITS in training: no FITS scaling recorded
    assert Preprocessing.for_training(64, 3, (0.7, 0.8), (0.9, 1.1), ["a.jpg"]).fits_scaling is None


# ---------------------------------------------------------------------------------------------- resolution


def test_recorded_values_are_used_and_explicit_equal_values_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_preprocessing(RECORD, {}) == {"resize_after_crop": 64, "crop_scale_bounds": (0.7, 0.8),
                                                     "crop_ratio_bounds": (0.9, 1.1)}
        resolve_preprocessing(RECORD, {"resize_after_crop": 64, "crop_scale_bounds": [0.7, 0.8]})


def test_contradictions_warn_once_naming_both_values():
    with pytest.warns(UserWarning) as record:
        resolved = resolve_preprocessing(RECORD, {"resize_after_crop": 224, "crop_scale_bounds": (0.5, 0.6)},
                                         model_name="MyModel")
    assert len(record) == 1
    message = str(record[0].message)
    assert "MyModel" in message and "resize_after_crop=224 (recorded: 64)" in message
    assert "crop_scale_bounds=(0.5, 0.6) (recorded: (0.7, 0.8))" in message
    assert resolved["resize_after_crop"] == 224  # the explicit value wins


def test_fits_images_for_a_jpeg_model_warn_and_the_reverse():
    with pytest.warns(UserWarning, match="trained on JPG images .* but the catalog holds FITS images"):
        resolve_preprocessing(RECORD, {}, file_locs=["a.fits", "b.jpg"])
    fits_model = Preprocessing(input_size=64, image_formats=("fits",), fits_scaling="percentile")
    with pytest.warns(UserWarning, match="trained on FITS images .* but the catalog holds PNG images"):
        resolve_preprocessing(fits_model, {}, file_locs=["a.png"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_preprocessing(fits_model, {}, file_locs=["a.fits.gz"])
        resolve_preprocessing(None, {}, file_locs=["a.fits"])  # a model built in memory: nothing recorded


def test_fits_scaling_contradiction_only_for_models_trained_on_fits():
    fits_model = Preprocessing(input_size=64, image_formats=("fits",), fits_scaling="percentile")
    with pytest.warns(UserWarning, match=r"fits_scaling='asinh' \(recorded: 'percentile'\)"):
        resolve_preprocessing(fits_model, {"fits_scaling": "asinh"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_preprocessing(RECORD, {"fits_scaling": "asinh"})["fits_scaling"] == FITS_SCALINGS["asinh"]


def test_a_record_without_size_warns_and_falls_back():
    with pytest.warns(UserWarning, match="records no training image size .* using 128 px"):
        assert resolve_preprocessing(Preprocessing(channels=3), {}, fallback_input_size=128) == {
            "resize_after_crop": 128}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_preprocessing(None, {}, fallback_input_size=128) == {"resize_after_crop": 128}


def test_a_partial_record_of_an_old_file_gives_its_size_but_no_contradiction():
    """Files saved before records kept a size (``zoobot_input_size``) that was not always the training size."""
    old = restore_record(None, input_size=32, channels=1)
    assert old.is_partial and not RECORD.is_partial
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_preprocessing(old, {})["resize_after_crop"] == 32
        assert resolve_preprocessing(old, {"resize_after_crop": 224})["resize_after_crop"] == 224
