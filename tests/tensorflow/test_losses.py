"""The Keras Dirichlet-multinomial loss against the float64 oracle, hand-computed cases and the PyTorch loss."""
import math

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared import schemas  # noqa: E402
from zoobot.shared.losses_reference import dirichlet_multinomial_nll  # noqa: E402
from zoobot.shared.losses_reference import vote_fraction_nll as reference_fraction_nll  # noqa: E402
from zoobot.tensorflow.training import losses  # noqa: E402

SCHEMA = schemas.decals_dr5_ortho_schema
GROUPS = SCHEMA.question_index_groups


def random_batch(seed=0, batch=12, zero_fraction=0.3):
    """Vote counts with whole questions left unanswered, and concentrations in (1, 101)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 25, size=(batch, SCHEMA.n_answers)).astype(np.float32)
    for start, end in GROUPS:
        unanswered = rng.random(batch) < zero_fraction
        counts[unanswered, start:end + 1] = 0
    counts[0] = 0  # one galaxy with no votes at all
    alpha = rng.uniform(1.0, 101.0, size=counts.shape).astype(np.float32)
    return counts, alpha


def test_matches_float64_oracle_per_question_and_reduced():
    counts, alpha = random_batch()
    expected = dirichlet_multinomial_nll(counts, alpha, GROUPS)
    per_question = losses.calculate_multiquestion_loss(counts, alpha, GROUPS).numpy()
    assert per_question.shape == (len(counts), len(GROUPS)) and per_question.dtype == np.float32
    np.testing.assert_allclose(per_question, expected, rtol=1e-4, atol=1e-4)

    loss = losses.get_multiquestion_loss(GROUPS)
    assert float(loss(counts, alpha)) == pytest.approx(expected.sum(axis=1).mean(), rel=1e-4)
    summed = losses.get_multiquestion_loss(GROUPS, reduction="sum")(counts, alpha)
    assert float(summed) == pytest.approx(expected.sum(), rel=1e-4)
    per_galaxy = losses.get_multiquestion_loss(GROUPS, reduction="none")(counts, alpha).numpy()
    np.testing.assert_allclose(per_galaxy, expected.sum(axis=1), rtol=1e-4, atol=1e-4)
    kept = losses.get_multiquestion_loss(GROUPS, sum_over_questions=False, reduction="none")(counts, alpha)
    np.testing.assert_allclose(kept.numpy(), expected, rtol=1e-4, atol=1e-4)
    # the PyTorch spelling 'mean' is the Keras 'sum_over_batch_size'
    assert float(losses.get_multiquestion_loss(GROUPS, reduction="mean")(counts, alpha)) == pytest.approx(
        float(loss(counts, alpha)))


def test_hand_computed_values():
    # one vote, flat Dirichlet: P = 1/2
    nll = losses.get_dirichlet_neg_log_prob([[1.0, 0.0]], [1.0], [[1.0, 1.0]])
    assert float(nll[0]) == pytest.approx(math.log(2), rel=1e-6)
    # votes (3, 1), alpha (2, 2): P = 4!/(3! 1!) * G(4)/G(8) * G(5)/G(2) * G(3)/G(2) = 1152/5040
    value = losses.get_multiquestion_loss([(0, 1), (2, 4)])(
        np.array([[3.0, 1.0, 0.0, 0.0, 0.0]]), np.full((1, 5), 2.0))
    assert float(value) == pytest.approx(-math.log(1152 / 5040), rel=1e-6)
    assert float(losses.single_question_dirichlet_loss([[0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0]])[0]) == 0.0
    with pytest.warns(DeprecationWarning, match=r"losses\.dirichlet_loss is deprecated: use "
                                                r"zoobot\.tensorflow\.training\.losses\.single_question_dirichlet_loss"):
        assert float(losses.dirichlet_loss([[0.0, 0.0, 0.0]], [[5.0, 5.0, 5.0]])[0]) == 0.0


def test_zero_votes_give_exactly_zero_loss_and_gradient():
    counts, alpha = random_batch(seed=3)
    concentrations = tf.Variable(alpha)
    loss = losses.get_multiquestion_loss(GROUPS, sum_over_questions=False, reduction="none")
    with tf.GradientTape() as tape:
        per_question = loss(counts, concentrations)
        total = tf.reduce_sum(per_question)
    gradient = tape.gradient(total, concentrations).numpy()
    per_question = per_question.numpy()
    n_unanswered = 0
    for q, (start, end) in enumerate(GROUPS):
        unanswered = counts[:, start:end + 1].sum(axis=1) == 0
        n_unanswered += unanswered.sum()
        assert np.all(per_question[unanswered, q] == 0.0)
        assert np.all(gradient[unanswered, start:end + 1] == 0.0)
        assert np.all(np.isfinite(gradient[~unanswered, start:end + 1]))
        assert np.all(np.abs(gradient[~unanswered, start:end + 1]).sum(axis=1) > 0)
    assert n_unanswered > len(GROUPS)  # the check above really covered unanswered questions
    assert np.all(gradient[0] == 0.0)


def test_gradient_matches_finite_difference_of_oracle():
    counts, alpha = random_batch(seed=5, batch=3)
    concentrations = tf.Variable(alpha.astype(np.float64))
    with tf.GradientTape() as tape:
        value = losses.get_multiquestion_loss(GROUPS)(counts.astype(np.float64), concentrations)
    gradient = tape.gradient(value, concentrations).numpy()
    eps = 1e-4
    for galaxy, answer in [(1, 0), (1, 5), (2, 30)]:
        up, down = alpha.astype(np.float64).copy(), alpha.astype(np.float64).copy()
        up[galaxy, answer] += eps
        down[galaxy, answer] -= eps
        numeric = (dirichlet_multinomial_nll(counts, up, GROUPS).sum(axis=1).mean()
                   - dirichlet_multinomial_nll(counts, down, GROUPS).sum(axis=1).mean()) / (2 * eps)
        assert gradient[galaxy, answer] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_same_values_as_pytorch_loss():
    # zoobot.tensorflow imports torchvision before TensorFlow starts (when installed), so torch is safe here
    torch = pytest.importorskip("torch")
    from zoobot.pytorch.training import losses as torch_losses

    counts, alpha = random_batch(seed=7)
    torch_value = torch_losses.calculate_multiquestion_loss(torch.from_numpy(counts), torch.from_numpy(alpha),
                                                            GROUPS).numpy()
    tf_value = losses.calculate_multiquestion_loss(counts, alpha, GROUPS).numpy()
    np.testing.assert_allclose(tf_value, torch_value, rtol=1e-4, atol=1e-4)
    torch_mean = torch_losses.get_multiquestion_loss(GROUPS)(torch.from_numpy(counts), torch.from_numpy(alpha))
    assert float(losses.get_multiquestion_loss(GROUPS)(counts, alpha)) == pytest.approx(float(torch_mean), rel=1e-4)


def test_integer_labels_and_non_contiguous_groups():
    counts, alpha = random_batch(seed=11)
    groups = [(0, 2), (5, 6), (10, 12)]  # columns 3-4 and 7-9 belong to no question
    expected = dirichlet_multinomial_nll(counts[:, :13], alpha[:, :13], groups)
    value = losses.calculate_multiquestion_loss(counts[:, :13].astype(np.int64), alpha[:, :13], groups)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match="predictions have 33 answer columns but question_index_groups expect 34"):
        losses.get_multiquestion_loss(GROUPS)(np.zeros((2, 34)), np.ones((2, 33)))
    with pytest.raises(ValueError, match="Unknown reduction 'avg'"):
        losses.get_multiquestion_loss(GROUPS, reduction="avg")
    with pytest.raises(ValueError, match="ascending and non-overlapping"):
        losses.get_multiquestion_loss([(0, 2), (2, 3)])
    with pytest.raises(TypeError, match="must hold ints"):
        losses.get_multiquestion_loss([(0, 1.5)])


def test_serialisable_and_usable_in_compile(tmp_path):
    loss = losses.get_multiquestion_loss(GROUPS)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, losses.MultiquestionLoss)
    assert restored.question_index_groups == list(GROUPS) and restored.reduction == "sum_over_batch_size"
    counts, alpha = random_batch(seed=2)
    assert float(restored(counts, alpha)) == pytest.approx(float(loss(counts, alpha)))

    # a model compiled with the loss saves and loads without custom_objects
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(SCHEMA.n_answers, activation="softplus")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=loss)
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.loss, losses.MultiquestionLoss)


def test_vote_fraction_nll_is_scipys_multinomial_at_the_dirichlet_mean():
    from zoobot.tensorflow.estimators.losses import VoteFractionLoss, vote_fraction_nll

    counts, alpha = random_batch()
    expected = reference_fraction_nll(counts, alpha, GROUPS)
    got = vote_fraction_nll(counts.astype(np.float64), alpha.astype(np.float64), GROUPS).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(vote_fraction_nll(counts, 7.5 * alpha, GROUPS).numpy(), expected, rtol=1e-4,
                               atol=1e-4)
    assert float(VoteFractionLoss(GROUPS)(counts, alpha)) == pytest.approx(expected.sum(axis=1).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="answer columns but question_index_groups expect"):
        vote_fraction_nll(counts[:, :5], alpha[:, :5], GROUPS)


def test_tree_compute_loss_adds_the_weighted_fraction_loss_only_while_training():
    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    counts, alpha = random_batch(batch=6)
    model = ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1)
    dm = dirichlet_multinomial_nll(counts.astype(np.float64), alpha.astype(np.float64), GROUPS).sum(axis=1).mean()
    fraction = reference_fraction_nll(counts, alpha, GROUPS).sum(axis=1).mean()
    assert model.fraction_loss_weight == 0.0
    model.fraction_loss_weight = 2.5
    train_loss = float(model.compute_loss(y=counts, y_pred=alpha, training=True))
    val_loss = float(model.compute_loss(y=counts, y_pred=alpha, training=False))
    assert val_loss == pytest.approx(dm, rel=1e-5)
    assert train_loss == pytest.approx(dm + 2.5 * fraction, rel=1e-5)
