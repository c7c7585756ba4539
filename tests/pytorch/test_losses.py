"""The PyTorch Dirichlet-multinomial loss against the float64 scipy oracle (api.md 1.5, 2.3)."""
import pickle

import numpy as np
import pytest
import torch

from zoobot.pytorch.estimators import define_model
from zoobot.pytorch.training import losses
from zoobot.shared import schemas
from zoobot.shared.losses_reference import dirichlet_multinomial_nll
from zoobot.shared.losses_reference import vote_fraction_nll as reference_fraction_nll

SCHEMA = schemas.decals_dr5_ortho_schema
GROUPS = SCHEMA.question_index_groups


def random_batch(n_galaxies=64, seed=0, dtype=torch.float32, zero_fraction=0.3):
    """Vote counts with a good share of unasked questions (all-zero groups) and concentrations in (1, 101)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, size=(n_galaxies, SCHEMA.n_answers)).astype(np.float64)
    for start, end in GROUPS:
        unasked = rng.random(n_galaxies) < zero_fraction
        counts[unasked, start:end + 1] = 0
    concentrations = 1 + 100 * rng.random((n_galaxies, SCHEMA.n_answers))
    return counts, concentrations, torch.tensor(counts, dtype=dtype), torch.tensor(concentrations, dtype=dtype)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_per_question_loss_matches_oracle(dtype, rtol):
    counts, conc, labels, predictions = random_batch(dtype=dtype)
    expected = dirichlet_multinomial_nll(counts, conc, GROUPS)
    got = losses.calculate_multiquestion_loss(labels, predictions, GROUPS)
    assert got.dtype == dtype and got.shape == (64, SCHEMA.n_questions)
    np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=rtol)
    # the single-question functions agree with the vectorised path
    for q, (start, end) in enumerate(GROUPS):
        single = losses.single_question_dirichlet_loss(labels[:, start:end + 1], predictions[:, start:end + 1])
        np.testing.assert_allclose(single.numpy(), expected[:, q], rtol=rtol, atol=rtol)


def test_hand_computed_value():
    # 3 and 1 votes, flat-ish Dirichlet(2, 2): P = C(4,3) B(5, 3) / B(2, 2) = 4 * (1/105) / (1/6) = 24/105
    loss = losses.get_multiquestion_loss([(0, 1)])(torch.tensor([[3.0, 1.0]]), torch.tensor([[2.0, 2.0]]))
    assert float(loss) == pytest.approx(-np.log(24 / 105), rel=1e-6)


def test_reductions():
    counts, conc, labels, predictions = random_batch(n_galaxies=16, seed=1)
    per_question = dirichlet_multinomial_nll(counts, conc, GROUPS)
    per_galaxy = per_question.sum(axis=1)
    mean = losses.get_multiquestion_loss(GROUPS)(labels, predictions)
    total = losses.get_multiquestion_loss(GROUPS, reduction="sum")(labels, predictions)
    none = losses.get_multiquestion_loss(GROUPS, reduction="none")(labels, predictions)
    by_question = losses.get_multiquestion_loss(GROUPS, sum_over_questions=False, reduction="none")(labels, predictions)
    assert mean.shape == () and none.shape == (16,) and by_question.shape == (16, SCHEMA.n_questions)
    np.testing.assert_allclose(float(mean), per_galaxy.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(total), per_galaxy.sum(), rtol=1e-5)
    np.testing.assert_allclose(none.numpy(), per_galaxy, rtol=1e-4)
    np.testing.assert_allclose(by_question.numpy(), per_question, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_vote_questions_give_exact_zero_loss_and_gradient(dtype):
    counts, _, labels, predictions = random_batch(n_galaxies=32, seed=2, dtype=dtype, zero_fraction=0.5)
    predictions.requires_grad_(True)
    per_question = losses.calculate_multiquestion_loss(labels, predictions, GROUPS)
    per_question.sum().backward()
    n_unasked = 0
    for q, (start, end) in enumerate(GROUPS):
        unasked = counts[:, start:end + 1].sum(axis=1) == 0
        n_unasked += unasked.sum()
        assert torch.equal(per_question[unasked, q].detach(), torch.zeros(int(unasked.sum()), dtype=dtype))
        grad = predictions.grad[unasked, start:end + 1]
        assert torch.equal(grad, torch.zeros_like(grad))
        asked_grad = predictions.grad[~unasked, start:end + 1]
        assert torch.isfinite(asked_grad).all() and (asked_grad != 0).any()
    assert n_unasked > 20  # the test exercised the zero-vote path


def test_all_zero_batch_is_exactly_zero_without_nan_gradients():
    predictions = torch.full((4, SCHEMA.n_answers), 1.0, requires_grad=True)  # alpha at the lower edge
    loss = losses.get_multiquestion_loss(GROUPS)(torch.zeros(4, SCHEMA.n_answers), predictions)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(predictions.grad, torch.zeros_like(predictions))


def test_integer_labels_are_accepted():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=3)
    from_int = losses.get_multiquestion_loss(GROUPS)(labels.to(torch.int64), predictions)
    from_float = losses.get_multiquestion_loss(GROUPS)(labels, predictions)
    assert torch.equal(from_int, from_float)


def test_width_mismatch_is_e10():
    loss = losses.get_multiquestion_loss(GROUPS)
    with pytest.raises(ValueError, match="labels have 33 answer columns but question_index_groups expect 34"):
        loss(torch.zeros(2, 33), torch.ones(2, 34))
    with pytest.raises(ValueError, match="predictions have 35 answer columns"):
        loss(torch.zeros(2, 34), torch.ones(2, 35))


@pytest.mark.parametrize("groups, error, match", [
    ([], ValueError, "empty"),
    ([(0, 1), (1, 3)], ValueError, "non-overlapping"),
    ([(2, 1)], ValueError, "start <= end"),
    ([(0, 1.5)], TypeError, "must hold ints"),
    ("abc", TypeError, "list of"),
])
def test_bad_groups_rejected_at_construction(groups, error, match):
    with pytest.raises(error, match=match):
        losses.get_multiquestion_loss(groups)


def test_bad_reduction_is_e13():
    with pytest.raises(ValueError, match="Unknown reduction 'avg'"):
        losses.get_multiquestion_loss(GROUPS, reduction="avg")


def test_loss_is_picklable_and_keeps_no_state():
    loss = losses.get_multiquestion_loss(GROUPS)
    restored = pickle.loads(pickle.dumps(loss))
    _, _, labels, predictions = random_batch(n_galaxies=4, seed=4)
    assert torch.equal(restored(labels, predictions), loss(labels, predictions))
    assert loss.state_dict() == {}


def test_groups_with_gaps_ignore_uncovered_columns():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=5)
    groups = [(0, 2), (5, 6)]  # columns 3-4 belong to no question
    expected = dirichlet_multinomial_nll(counts[:, :7], conc[:, :7], groups)
    got = losses.calculate_multiquestion_loss(labels[:, :7], predictions[:, :7], groups)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_careful_warns_and_changes_nothing():
    _, _, labels, predictions = random_batch(n_galaxies=4, seed=6)
    with pytest.warns(UserWarning, match="careful=True is accepted for upstream compatibility but ignored"):
        careful = losses.calculate_multiquestion_loss(labels, predictions, GROUPS, careful=True)
    assert torch.equal(careful, losses.calculate_multiquestion_loss(labels, predictions, GROUPS))


def test_get_dirichlet_neg_log_prob_matches_oracle():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=7, zero_fraction=0)
    start, end = GROUPS[0]
    nll = losses.get_dirichlet_neg_log_prob(labels[:, start:end + 1], labels[:, start:end + 1].sum(1),
                                            predictions[:, start:end + 1])
    np.testing.assert_allclose(nll.numpy(), dirichlet_multinomial_nll(counts, conc, GROUPS)[:, 0], rtol=1e-4)


def test_define_model_loss_helpers_use_upstream_argument_order():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=8)
    expected = dirichlet_multinomial_nll(counts, conc, GROUPS)
    np.testing.assert_allclose(define_model.per_question_dirichlet_loss(predictions, labels, GROUPS).numpy(),
                               expected, rtol=1e-4, atol=1e-4)
    loss_func = pickle.loads(pickle.dumps(define_model.get_dirichlet_loss_func(GROUPS)))
    np.testing.assert_allclose(loss_func(predictions, labels).numpy(), expected, rtol=1e-4, atol=1e-4)
    summed = define_model.per_question_dirichlet_loss(predictions, labels, GROUPS, sum_over_questions=True)
    np.testing.assert_allclose(summed.numpy(), expected.sum(1), rtol=1e-4)


def test_old_loss_names_warn_naming_the_new_name_and_give_the_same_numbers():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=8)
    with pytest.warns(DeprecationWarning, match=r"define_model\.dirichlet_loss is deprecated: use .*"
                                                r"define_model\.per_question_dirichlet_loss"):
        old = define_model.dirichlet_loss(predictions, labels, GROUPS, sum_over_questions=True)
    assert torch.equal(old, define_model.per_question_dirichlet_loss(predictions, labels, GROUPS,
                                                                     sum_over_questions=True))
    start, end = GROUPS[0]
    with pytest.warns(DeprecationWarning, match=r"losses\.dirichlet_loss is deprecated: use .*"
                                                r"losses\.single_question_dirichlet_loss"):
        old = losses.dirichlet_loss(labels[:, start:end + 1], predictions[:, start:end + 1])
    assert torch.equal(old, losses.single_question_dirichlet_loss(labels[:, start:end + 1],
                                                                  predictions[:, start:end + 1]))


def test_training_losses_is_the_estimators_module_under_its_documented_path():
    from zoobot.pytorch.estimators import losses as estimator_losses

    for name in ["MultiquestionLoss", "get_multiquestion_loss", "calculate_multiquestion_loss",
                 "single_question_dirichlet_loss", "get_dirichlet_neg_log_prob", "validate_question_index_groups"]:
        assert getattr(losses, name) is getattr(estimator_losses, name), name


def test_half_precision_predictions_are_computed_in_float32():
    counts, conc, labels, predictions = random_batch(n_galaxies=8, seed=9)
    loss = losses.calculate_multiquestion_loss(labels, predictions.to(torch.bfloat16), GROUPS)
    assert loss.dtype == torch.float32
    expected = dirichlet_multinomial_nll(counts, predictions.to(torch.bfloat16).double().numpy(), GROUPS)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4, atol=1e-3)


def test_vote_fraction_nll_is_scipys_multinomial_at_the_dirichlet_mean():
    from zoobot.pytorch.estimators.losses import vote_fraction_nll

    counts, conc, labels, predictions = random_batch(dtype=torch.float64)
    expected = reference_fraction_nll(counts, conc, GROUPS)
    np.testing.assert_allclose(vote_fraction_nll(labels, predictions, GROUPS).numpy(), expected, rtol=1e-10,
                               atol=1e-10)
    # it sees the fractions only: scaling a galaxy's concentrations changes nothing
    np.testing.assert_allclose(vote_fraction_nll(labels, 7.5 * predictions, GROUPS).numpy(), expected, rtol=1e-10,
                               atol=1e-10)
    with pytest.raises(ValueError, match="answer columns but question_index_groups expect"):
        vote_fraction_nll(labels[:, :5], predictions[:, :5], GROUPS)


def test_tree_training_step_adds_the_weighted_fraction_loss_and_validation_does_not():
    counts, conc, labels, _ = random_batch(n_galaxies=6, dtype=torch.float32)
    model = define_model.ZoobotTree(output_dim=SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn",
                                    channels=1, test_time_dropout=False)
    model.eval()  # no dropout: the same predictions in both steps
    images = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        alpha = model(images).double().numpy()
    dm = dirichlet_multinomial_nll(counts, alpha, GROUPS).sum(axis=1).mean()
    fraction = reference_fraction_nll(counts, alpha, GROUPS).sum(axis=1).mean()
    model.fraction_loss_weight = 2.5
    with pytest.warns(UserWarning, match="self.log"), torch.no_grad():  # no Trainer attached: Lightning warns
        train_loss = float(model.training_step((images, labels), 0))
        val_loss = float(model.validation_step((images, labels), 0))
    assert val_loss == pytest.approx(dm, rel=1e-5)
    assert train_loss == pytest.approx(dm + 2.5 * fraction, rel=1e-5)
    model.fraction_loss_weight = 0.0
    with pytest.warns(UserWarning, match="self.log"), torch.no_grad():
        assert float(model.training_step((images, labels), 0)) == pytest.approx(dm, rel=1e-5)
