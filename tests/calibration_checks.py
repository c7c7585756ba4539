"""Checks of a trained, calibrated tree model shared by the PyTorch and TensorFlow calibration tests.

``raw(catalog, model, **kwargs)`` is the backend's deterministic predict (concentrations, (galaxy, answer)).
"""
import numpy as np
import pytest

from zoobot.shared import calibration
from zoobot.shared.losses_reference import dirichlet_multinomial_nll


def check_scale_maximises_the_likelihood(raw, model, val, schema):
    """Independent check with the float64 oracle: the stored scale beats its neighbours on the validation
    votes (the data it was fitted on)."""
    alpha = raw(val, model, calibrate=False)
    counts = val[schema.label_cols].to_numpy(dtype=np.float64)
    scale = model.concentration_scale

    def nll(factor):
        scaled = calibration.apply_concentration_scale(alpha, scale * factor, schema)
        return dirichlet_multinomial_nll(counts, scaled, schema.question_index_groups).sum(axis=0)

    best = nll(1.0)
    assert np.all(best <= nll(1.1) + 1e-6) and np.all(best <= nll(1 / 1.1) + 1e-6)


def check_predict_switch(raw, model, val, schema, save_loc):
    """predict applies the scale by default (also when saving), not with calibrate=False, nor without a scale."""
    off = raw(val, model, calibrate=False)
    on = raw(val, model, save_loc=save_loc)
    np.testing.assert_allclose(on, calibration.apply_concentration_scale(off, model.concentration_scale, schema),
                               rtol=1e-5)
    record, model.calibration = model.calibration, None
    try:
        np.testing.assert_allclose(raw(val, model), off, rtol=1e-5)  # no scale: nothing to apply
    finally:
        model.calibration = record
    with pytest.raises(ValueError, match="calibrate must be True or False"):
        raw(val, model, calibrate="no")
