"""Scheduler parameters and the cosine multiplier, against hand-computed values."""
import math

import pytest

from zoobot.shared.schedules import cosine_multiplier, normalise_scheduler_params


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 1 / 3),  # warm-up: (e + 1) / w
        (1, 2 / 3),
        (2, 1.0),
        (3, 1.0),  # first cosine epoch: f + (1 - f) * (1 + cos 0) / 2 = 1
        (4, 0.1 + 0.9 * (1 + math.cos(math.pi * 1 / 5)) / 2),
        (6, 0.1 + 0.9 * (1 + math.cos(math.pi * 3 / 5)) / 2),
        (7, 0.1 + 0.9 * (1 + math.cos(math.pi * 4 / 5)) / 2),
        (8, 0.1),  # e >= max_epochs: f
        (100, 0.1),
    ],
)
def test_cosine_multiplier_hand_computed(epoch, expected):
    assert cosine_multiplier(epoch, warmup_epochs=3, max_epochs=8, min_lr_factor=0.1) == pytest.approx(expected)


def test_cosine_multiplier_without_warmup_starts_at_one_and_reaches_factor():
    values = [cosine_multiplier(e, 0, 4, 0.0) for e in range(6)]
    assert values == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0, 0])


def test_cosine_multiplier_rejects_negative_epoch():
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        cosine_multiplier(-1, 0, 4, 0.1)


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
