"""Scheduler parameters, and the hand-written reference multiplier of the cosine schedule."""
import math

import pytest

from zoobot.shared.schedules import normalise_scheduler_params


def hand_multiplier(epoch: int, warmup_epochs: int, max_epochs: int, min_lr_factor: float) -> float:
    """The cosine schedule's learning-rate multiplier, written from its definition (docs/guides/training_recipe.md):
    the reference the backends' library schedulers are checked against (tests/parity/test_lr_schedules.py)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    if epoch >= max_epochs:
        return min_lr_factor
    progress = (epoch - warmup_epochs) / (max_epochs - warmup_epochs)
    return min_lr_factor + (1 - min_lr_factor) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 1 / 3),  # warm-up: (e + 1) / w
        (1, 2 / 3),
        (2, 1.0),
        (3, 1.0),  # first cosine epoch: f + (1 - f) * (1 + cos 0) / 2 = 1
        (4, 0.1 + 0.9 * (1 + 0.8090169943749475) / 2),  # cos(pi / 5)
        (6, 0.1 + 0.9 * (1 - 0.30901699437494745) / 2),  # cos(3 pi / 5)
        (7, 0.1 + 0.9 * (1 - 0.8090169943749475) / 2),
        (8, 0.1),  # e >= max_epochs: f
        (100, 0.1),
    ],
)
def test_hand_multiplier_against_tabulated_cosines(epoch, expected):
    assert hand_multiplier(epoch, warmup_epochs=3, max_epochs=8, min_lr_factor=0.1) == pytest.approx(expected)


@pytest.mark.parametrize("params", [None, {}, {"name": "constant"}, {"cosine_schedule": False, "warmup_epochs": 3}])
def test_constant_schedules_normalise_to_none(params):
    assert normalise_scheduler_params(params) is None


def test_canonical_and_upstream_spellings_agree():
    canonical = {"name": "cosine", "warmup_epochs": 2, "max_epochs": 30, "min_lr_factor": 0.05}
    upstream = {
        "cosine_schedule": True,
        "warmup_epochs": 2,
        "max_cosine_epochs": 30,
        "max_learning_rate_reduction_factor": 0.05,
    }
    assert normalise_scheduler_params(canonical) == canonical
    assert normalise_scheduler_params(upstream) == canonical


def test_defaults_are_filled_in():
    assert normalise_scheduler_params({"name": "plateau"}) == {"name": "plateau", "patience": 5}
    assert normalise_scheduler_params({"name": "cosine"}) == {
        "name": "cosine",
        "warmup_epochs": 0,
        "max_epochs": 100,
        "min_lr_factor": 0.01,
    }


def test_unknown_name_and_key_are_e13():
    with pytest.raises(ValueError, match=r"Unknown scheduler name 'cosin'.*Did you mean 'cosine'"):
        normalise_scheduler_params({"name": "cosin"})
    with pytest.raises(ValueError, match=r"Unknown key for the 'plateau' schedule.*'patiense'.*patience"):
        normalise_scheduler_params({"name": "plateau", "patiense": 3})


def test_conflicting_and_out_of_range_values():
    with pytest.raises(ValueError, match="both max_epochs=10 and its upstream spelling max_cosine_epochs=20"):
        normalise_scheduler_params({"name": "cosine", "max_epochs": 10, "max_cosine_epochs": 20})
    with pytest.raises(ValueError, match="cosine_schedule=True but name='plateau'"):
        normalise_scheduler_params({"name": "plateau", "cosine_schedule": True})
    with pytest.raises(ValueError, match="warmup_epochs=5 must be smaller than max_epochs=5"):
        normalise_scheduler_params({"name": "cosine", "warmup_epochs": 5, "max_epochs": 5})
    with pytest.raises(ValueError, match=r"min_lr_factor .* must be a number in \[0, 1\], got 2"):
        normalise_scheduler_params({"name": "cosine", "min_lr_factor": 2})
    with pytest.raises(TypeError, match="must be a dict or None"):
        normalise_scheduler_params("cosine")
