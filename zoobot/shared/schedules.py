"""Learning-rate schedules shared by both backends (docs/api/shared/internals.md).

Both backends accept the same ``scheduler_params`` dict. This module only checks and resolves it (no
framework code): it turns any accepted spelling into one canonical dict, from which each backend builds
the schedule with its framework's own schedulers; both give the same learning rate per epoch (the
formula is in docs/api/shared/internals.md).

Canonical forms returned by :func:`normalise_scheduler_params`:

- ``None``: constant learning rate (from ``None``, ``{}``, ``{'name': 'constant'}`` or
  ``{'cosine_schedule': False, ...}``);
- ``{'name': 'plateau', 'patience': p}``: reduce on plateau of ``validation/supervised_loss``;
- ``{'name': 'cosine', 'warmup_epochs': w, 'max_epochs': m, 'min_lr_factor': f}``.

The upstream (Zoobot v2) keys ``cosine_schedule``, ``max_cosine_epochs`` and
``max_learning_rate_reduction_factor`` are accepted as spellings of ``name='cosine'``,
``max_epochs`` and ``min_lr_factor``.
"""
from __future__ import annotations

from typing import Mapping

from zoobot.shared.errors import unknown_option_error
from zoobot.shared.validation import check_bool, check_int, is_number

__all__ = ["normalise_scheduler_params", "PLATEAU_DEFAULTS", "COSINE_DEFAULTS"]

#: Defaults filled in for a plateau schedule.
PLATEAU_DEFAULTS = {"patience": 5}
#: Defaults filled in for a cosine schedule (the upstream finetuning defaults).
COSINE_DEFAULTS = {"warmup_epochs": 0, "max_epochs": 100, "min_lr_factor": 0.01}

_NAMES = ["constant", "plateau", "cosine"]
# upstream key -> canonical key
_U2_KEYS = {"max_cosine_epochs": "max_epochs", "max_learning_rate_reduction_factor": "min_lr_factor"}
_KEYS = {
    "constant": {"name"},
    "plateau": {"name", "patience"},
    "cosine": {"name", "warmup_epochs", "max_epochs", "min_lr_factor"},
}


def normalise_scheduler_params(params: Mapping | None) -> dict | None:
    """Turn any accepted spelling of ``scheduler_params`` into the canonical dict.

    Over 80 lines: one check per accepted spelling of the scheduler settings, read top to bottom.

    Parameters
    ----------
    params : dict or None
        ``None`` or ``{}`` (constant LR); ``{'name': 'plateau', 'patience': 5}``;
        ``{'name': 'cosine', 'warmup_epochs': 0, 'max_epochs': 100, 'min_lr_factor': 0.01}``;
        or the upstream keys ``cosine_schedule`` (bool), ``warmup_epochs``, ``max_cosine_epochs``,
        ``max_learning_rate_reduction_factor``. Missing values take the defaults
        :data:`PLATEAU_DEFAULTS` / :data:`COSINE_DEFAULTS`.

    Returns
    -------
    dict or None
        The canonical dict, or ``None`` for a constant learning rate.

    Raises
    ------
    TypeError
        If ``params`` is not a mapping, or a value has the wrong type.
    ValueError
        (E13) unknown schedule name or key; conflicting spellings; values out of range
        (``patience >= 0``, ``0 <= warmup_epochs < max_epochs``, ``0 <= min_lr_factor <= 1``).

    Examples
    --------
    >>> normalise_scheduler_params({'cosine_schedule': True, 'max_cosine_epochs': 10})
    {'name': 'cosine', 'warmup_epochs': 0, 'max_epochs': 10, 'min_lr_factor': 0.01}
    >>> normalise_scheduler_params({}) is None
    True
    """
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise TypeError(f"scheduler_params must be a dict or None, got {type(params).__name__}: {params!r}")
    params = dict(params)
    if not params:
        return None

    # translate the upstream spellings
    if "cosine_schedule" in params:
        use_cosine = params.pop("cosine_schedule")
        check_bool("scheduler_params['cosine_schedule']", use_cosine)
        name = params.get("name")
        if use_cosine and name not in (None, "cosine"):
            raise ValueError(f"scheduler_params has cosine_schedule=True but name={name!r}; give only one of them.")
        if not use_cosine and name == "cosine":
            raise ValueError("scheduler_params has name='cosine' but cosine_schedule=False; give only one of them.")
        if use_cosine:
            params["name"] = "cosine"
        elif name is None:
            # upstream behaviour: cosine_schedule=False switches the schedule off, its settings are unused
            for key in ("warmup_epochs", "max_epochs", "min_lr_factor", *_U2_KEYS):
                params.pop(key, None)
            if not params:
                return None
    for old, new in _U2_KEYS.items():
        if old in params:
            value = params.pop(old)
            if new in params and params[new] != value:
                raise ValueError(
                    f"scheduler_params gives both {new}={params[new]!r} and its upstream spelling {old}={value!r}; "
                    "give only one of them."
                )
            params[new] = value

    if "name" not in params:
        if params.keys() & {"warmup_epochs", "max_epochs", "min_lr_factor"}:
            params["name"] = "cosine"
        elif "patience" in params:
            params["name"] = "plateau"
        else:
            raise unknown_option_error("scheduler_params keys", sorted(params), sorted(_KEYS["cosine"] | {"patience"}))
    name = params["name"]
    if name is None or name == "constant":
        name = "constant"
    if name not in _NAMES:
        raise unknown_option_error("scheduler name", name, _NAMES)
    for key in params:
        if key not in _KEYS[name]:
            accepted = sorted(_KEYS[name] - {"name"}) + sorted(k for k, v in _U2_KEYS.items() if v in _KEYS[name])
            raise unknown_option_error(f"key for the {name!r} schedule in scheduler_params", key, accepted)

    if name == "constant":
        return None
    if name == "plateau":
        patience = params.get("patience", PLATEAU_DEFAULTS["patience"])
        _check_whole_number("patience", patience, minimum=0)
        return {"name": "plateau", "patience": int(patience)}

    out = {"name": "cosine", **COSINE_DEFAULTS}
    out.update({k: v for k, v in params.items() if k != "name"})
    _check_whole_number("warmup_epochs", out["warmup_epochs"], minimum=0)
    _check_whole_number("max_epochs", out["max_epochs"], minimum=1)
    if out["warmup_epochs"] >= out["max_epochs"]:
        raise ValueError(
            f"scheduler_params: warmup_epochs={out['warmup_epochs']} must be smaller than "
            f"max_epochs={out['max_epochs']} (the cosine decay runs from warmup_epochs to max_epochs)."
        )
    factor = out["min_lr_factor"]
    if not is_number(factor) or not 0 <= factor <= 1:
        raise ValueError(
            f"scheduler_params: min_lr_factor (max_learning_rate_reduction_factor) must be a number in [0, 1], "
            f"got {factor!r}. The final learning rate is learning_rate * min_lr_factor."
        )
    out["warmup_epochs"], out["max_epochs"], out["min_lr_factor"] = (
        int(out["warmup_epochs"]),
        int(out["max_epochs"]),
        float(factor),
    )
    return out


def _check_whole_number(key: str, value, minimum: int) -> None:
    # configs read back from JSON/YAML may hold 5.0 for 5
    if is_number(value) and float(value).is_integer():
        value = int(value)
    check_int(f"scheduler_params[{key!r}]", value, minimum=minimum)


#: ``train()``'s schedule when ``scheduler_params`` is None (issue 13, chosen with
#: ``benchmarks/bench_science.py``): linear warm-up over the first ``min(2, epochs // 5)`` epochs, then
#: cosine decay to ``DEFAULT_TRAIN_MIN_LR_FACTOR`` x ``learning_rate`` at ``epochs``.
DEFAULT_TRAIN_WARMUP_EPOCHS = 2
DEFAULT_TRAIN_MIN_LR_FACTOR = 0.01
#: Lowest concentration of the Dirichlet head of models made by ``train()`` (issue 13): ``alpha = floor +
#: 100 * sigmoid(z)``. Upstream's floor of 1 per answer forces an uncertain question's vote fractions towards
#: uniform (a total concentration near the number of answers leaves no room for unequal alphas); deep
#: questions (how-rounded, bar, merging) were then predicted worse than the training mean. Stored in the
#: checkpoint (``zoobot_concentration_floor``); checkpoints without it keep 1.
DEFAULT_TRAIN_CONCENTRATION_FLOOR = 0.1
#: Weight of the vote-fraction loss that ``train()`` adds to the Dirichlet-multinomial loss while training
#: (``model.fraction_loss_weight``; issue 13): the multinomial NLL of the votes under the predicted fractions
#: ``alpha / sum(alpha)``. Where the network is unsure, the Dirichlet-multinomial loss prefers a small total
#: concentration and then hardly constrains the fractions; this term keeps teaching them. Validation losses
#: (early stopping, checkpoint choice, calibration) stay the Dirichlet-multinomial NLL alone.
DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT = 3.0
#: BatchNorm epsilon of the EfficientNets that PyTorch's ``train()`` builds (issue 13): Keras's, which the
#: TensorFlow backend's EfficientNets have (timm's default is PyTorch's 1e-5). The two backends then train the
#: same network (the momentum already matches: see ``train_with_keras``), and PyTorch's vote fractions improved
#: by 1-2 % on two-seed means (docs/benchmarks.md section 9, session 6). Passed to timm as ``bn_eps``, which its
#: EfficientNet builders take; the user's ``timm_kwargs`` override it.
DEFAULT_TRAIN_EFFICIENTNET_BN_EPS = 1e-3


def train_timm_kwargs(architecture_name: str, timm_kwargs=None) -> dict:
    """The ``timm_kwargs`` PyTorch's ``train()`` builds its encoder with: for timm EfficientNets (names starting
    ``efficientnet``), ``bn_eps`` :data:`DEFAULT_TRAIN_EFFICIENTNET_BN_EPS` under the user's ``timm_kwargs``;
    otherwise the user's ``timm_kwargs`` alone.

    Examples
    --------
    >>> train_timm_kwargs('efficientnet_b0')
    {'bn_eps': 0.001}
    >>> train_timm_kwargs('efficientnet_b0', {'bn_eps': 1e-5, 'drop_path_rate': 0.2})
    {'bn_eps': 1e-05, 'drop_path_rate': 0.2}
    >>> train_timm_kwargs('resnet50')
    {}
    """
    efficientnet = str(architecture_name).startswith("efficientnet")
    defaults = {"bn_eps": DEFAULT_TRAIN_EFFICIENTNET_BN_EPS} if efficientnet else {}
    return {**defaults, **dict(timm_kwargs or {})}


#: What ``train()`` records for an explicit constant schedule (``{}`` or ``{'name': 'constant'}``), so that
#: None keeps meaning "the default recipe".
CONSTANT = {"name": "constant"}


def train_scheduler_params(scheduler_params) -> dict | None:
    """``train()``'s check of ``scheduler_params``: None stays None (the default recipe, resolved per run by
    :func:`resolve_train_schedule`); an explicit constant schedule becomes :data:`CONSTANT`; anything else
    is normalised (:func:`normalise_scheduler_params`).

    Examples
    --------
    >>> train_scheduler_params(None) is None, train_scheduler_params({})
    (True, {'name': 'constant'})
    """
    if scheduler_params is None:
        return None
    return normalise_scheduler_params(scheduler_params) or dict(CONSTANT)


def resolve_train_schedule(scheduler_params, epochs: int) -> dict | None:
    """The schedule ``train()`` gives the model: for None, warm-up then cosine decay over ``epochs``; for
    :data:`CONSTANT`, None (a constant learning rate); otherwise ``scheduler_params`` itself.

    Examples
    --------
    >>> resolve_train_schedule(None, 15)
    {'name': 'cosine', 'warmup_epochs': 2, 'max_epochs': 15, 'min_lr_factor': 0.01}
    >>> resolve_train_schedule(None, 3)['warmup_epochs'], resolve_train_schedule({'name': 'constant'}, 15)
    (0, None)
    """
    if scheduler_params is None:
        epochs = int(epochs)
        return {"name": "cosine", "warmup_epochs": min(DEFAULT_TRAIN_WARMUP_EPOCHS, epochs // 5),
                "max_epochs": epochs, "min_lr_factor": DEFAULT_TRAIN_MIN_LR_FACTOR}
    if scheduler_params == CONSTANT:
        return None
    return scheduler_params
