"""The learning rate per epoch of both backends' cosine schedules (built from torch.optim.lr_scheduler and
keras.optimizers.schedules.CosineDecay) against the hand-written multiplier and against each other, for
train()'s default recipe and explicit scheduler_params (issue 17)."""
import numpy as np
import pytest

from tests.shared.test_schedules import hand_multiplier
from zoobot.shared.schedules import normalise_scheduler_params, resolve_train_schedule

pytestmark = [pytest.mark.torch, pytest.mark.tf]

CASES = [
    resolve_train_schedule(None, 3),  # train()'s default recipe: no warm-up for short runs ...
    resolve_train_schedule(None, 10),  # ... two warm-up epochs for longer ones
    resolve_train_schedule(None, 15),
    normalise_scheduler_params({"name": "cosine", "warmup_epochs": 1, "max_epochs": 2, "min_lr_factor": 0.1}),
    normalise_scheduler_params({"name": "cosine", "warmup_epochs": 3, "max_epochs": 8, "min_lr_factor": 0.0}),
    normalise_scheduler_params({"name": "cosine", "warmup_epochs": 2, "max_epochs": 5, "min_lr_factor": 1.0}),
    normalise_scheduler_params({"cosine_schedule": True, "max_cosine_epochs": 4}),
]
LR = 3e-3


def torch_lrs(params, epochs, group_lrs=(LR,)):
    import torch

    from zoobot.pytorch.estimators.define_model import cosine_scheduler

    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in group_lrs]
    optimizer = torch.optim.AdamW(groups)
    scheduler = cosine_scheduler(optimizer, params["warmup_epochs"], params["max_epochs"], params["min_lr_factor"])
    seen = []
    for _ in range(epochs):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return np.array(seen), type(scheduler).__name__


def keras_lrs(params, epochs):
    """The rates Keras's LearningRateScheduler (what the TF ZoobotTree's scheduler_callbacks return) sets per epoch."""
    import keras

    from zoobot.tensorflow.estimators.define_model import get_scheduler_callbacks

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=LR), loss="mse")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(float(model.optimizer.learning_rate.numpy())))
    model.fit(np.zeros((2, 1)), np.zeros((2, 1)), batch_size=2, epochs=epochs, verbose=0,
              callbacks=[*get_scheduler_callbacks(params, LR), record])
    return np.array(seen)


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"w{p['warmup_epochs']}-m{p['max_epochs']}-f{p['min_lr_factor']}")
def test_both_backends_follow_the_hand_formula_per_epoch(params):
    epochs = params["max_epochs"] + 2  # past max_epochs the rate stays at the floor
    hand = np.array([LR * hand_multiplier(e, params["warmup_epochs"], params["max_epochs"], params["min_lr_factor"])
                     for e in range(epochs)])
    torch_seen, kind = torch_lrs(params, epochs)
    assert kind == "SequentialLR"  # one parameter group: LinearLR -> CosineAnnealingLR -> ConstantLR
    np.testing.assert_allclose(torch_seen[:, 0], hand, rtol=1e-12, atol=1e-15)
    keras_seen = keras_lrs(params, epochs)
    np.testing.assert_allclose(keras_seen, hand.astype(np.float32), rtol=0, atol=0)  # float32 variable: exact
    np.testing.assert_allclose(keras_seen, torch_seen[:, 0], rtol=1e-7)


def test_layerwise_groups_each_decay_to_their_own_floor():
    """Finetuning's groups start at different rates; each follows lr_g x the multiplier (LambdaLR there), and
    the Keras finetuning multiplier is the same."""
    from zoobot.tensorflow.estimators.define_model import EpochCosineDecay

    params = {"warmup_epochs": 2, "max_epochs": 5, "min_lr_factor": 0.1}
    seen, kind = torch_lrs(params, 7, group_lrs=(0.02, 0.01, 0.005))
    assert kind == "LambdaLR"
    hand = np.array([hand_multiplier(e, 2, 5, 0.1) for e in range(7)])
    np.testing.assert_allclose(seen, hand[:, None] * np.array([0.02, 0.01, 0.005]), rtol=1e-12)
    keras_multiplier = [EpochCosineDecay(1.0, 2, 5, 0.1)(e) for e in range(7)]
    np.testing.assert_allclose(keras_multiplier, hand, rtol=1e-12)
