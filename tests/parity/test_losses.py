"""The TensorFlow loss equals the float64 scipy oracle and the PyTorch loss on the same random inputs, and
questions without votes give exactly zero loss and zero gradient in both backends (api.md 1.5), issue 5."""
import numpy as np
import pytest

from zoobot.shared import schemas
from zoobot.shared.losses_reference import dirichlet_multinomial_nll

from . import facts

pytestmark = [pytest.mark.torch, pytest.mark.tf]

GROUPS = schemas.get_schema(facts.SCHEMA_NAME).question_index_groups


@pytest.fixture(scope="module")
def torch_losses():
    return facts.loss_facts("pytorch")


@pytest.fixture(scope="module")
def oracle():
    counts, concentrations, zero = facts.loss_inputs()
    return dirichlet_multinomial_nll(counts.astype(np.float64), concentrations.astype(np.float64), GROUPS), zero


def test_both_backends_match_the_float64_oracle(torch_losses, tf_facts, oracle):
    expected, _ = oracle
    for backend, values in (("pytorch", torch_losses), ("tensorflow", tf_facts["losses"])):
        per_question = np.asarray(values["per_question"])
        assert per_question.shape == expected.shape, backend
        # float32 log-gamma of values up to ~130: absolute error ~1e-4 on terms of ~500
        np.testing.assert_allclose(per_question, expected, rtol=1e-5, atol=2e-4, err_msg=backend)
        assert values["reduced"] == pytest.approx(expected.sum(axis=1).mean(), rel=1e-5), backend


def test_tensorflow_loss_equals_pytorch_loss(torch_losses, tf_facts):
    ours, theirs = torch_losses, tf_facts["losses"]
    assert ours["dtype"] == theirs["dtype"] == "float32"
    np.testing.assert_allclose(np.asarray(theirs["per_question"]), np.asarray(ours["per_question"]),
                               rtol=1e-5, atol=2e-4)
    assert theirs["reduced"] == pytest.approx(ours["reduced"], rel=1e-5)
    np.testing.assert_allclose(np.asarray(theirs["gradient"]), np.asarray(ours["gradient"]), rtol=1e-4, atol=1e-6)


def test_questions_without_votes_give_exactly_zero_loss_and_gradient(torch_losses, tf_facts, oracle):
    _, zero = oracle
    assert zero.any() and (~zero).any()
    columns = np.zeros((zero.shape[0], GROUPS[-1][1] + 1), dtype=bool)
    for q, (start, end) in enumerate(GROUPS):
        columns[:, start:end + 1] = zero[:, [q]]
    for backend, values in (("pytorch", torch_losses), ("tensorflow", tf_facts["losses"])):
        per_question, gradient = np.asarray(values["per_question"]), np.asarray(values["gradient"])
        assert (per_question[zero] == 0.0).all(), backend  # exactly, not approximately
        assert (gradient[columns] == 0.0).all(), backend
        assert (per_question[~zero] > 0).all() and (gradient[~columns] != 0).any(), backend
