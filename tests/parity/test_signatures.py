"""Every function and class present in both backends has the same ``inspect.signature`` (api.md 0: same
module path, names, argument names, order and defaults), issue 5.

Compared: every public zoobot callable of the module pairs in ``facts.MODULES`` (constructors of classes,
and their ``load_from_checkpoint`` / ``load_from_name``), plus the functions named after their backend
(``get_pytorch_encoder`` / ``get_tensorflow_encoder`` ...). Differences written into api.md itself are
normalised away, and listed in ``DOCUMENTED``; nothing else may differ.
"""
import pytest

from . import facts

pytestmark = [pytest.mark.torch, pytest.mark.tf]

TORCH = facts.signatures("pytorch")
#: PyTorch-only by design: the map-style Dataset (api.md 2.1), the Lightning-checkpoint loader (the Keras
#: twin, ``load_zoobot_model``, reads .keras files), and the backend-named functions, compared in pairs below.
TORCH_ONLY = {"datasets.GalaxyDataset", "estimators.define_model.load_zoobot_checkpoint",
              *(f"{key}.{torch_name}" for key, torch_name, _ in facts.RENAMED)}
#: The TensorFlow ``train`` functions take TFRecord shards and the upstream v1 keywords on top (api.md 3.6),
#: keyword-only after the shared arguments.
TF_TRAIN_EXTRAS = ["train_records", "val_records", "test_records", "requested_img_size", "always_augment", "eager"]
#: api.md 2.3 / 3.5: each backend's loss uses its framework's name for the mean over the batch, and the Keras
#: loss class takes keras.losses.Loss's ``name`` and ``dtype`` last.
DOCUMENTED = {
    "training.losses.get_multiquestion_loss": "reduction default: 'mean' (torch) / 'sum_over_batch_size' (Keras)",
    "training.losses.MultiquestionLoss": "reduction default as above; Keras adds name, dtype (keras.losses.Loss)",
}
BOTH = sorted(key for key in TORCH if key not in TORCH_ONLY)


def normalise(key, signature, backend):
    signature = [list(p) for p in signature]
    if key.startswith("training.train.train"):  # train, train_default_zoobot_from_scratch
        if backend == "tensorflow":
            extras = [p for p in signature if p[0] in TF_TRAIN_EXTRAS]
            assert [p[0] for p in extras] == TF_TRAIN_EXTRAS and all(p[1] == "KEYWORD_ONLY" for p in extras), extras
            assert signature[-len(extras):] == extras, "the TensorFlow-only keywords must come last"
            signature = signature[:-len(extras)]
    if key in DOCUMENTED:
        for p in signature:
            if p[0] == "reduction":
                p[2] = "<the framework's mean>"
        if backend == "tensorflow" and key.endswith("MultiquestionLoss"):
            assert [p[0] for p in signature[-2:]] == ["name", "dtype"]
            signature = signature[:-2]
    return signature


@pytest.mark.parametrize("key", BOTH)
def test_signature_is_identical_in_both_backends(key, tf_facts):
    tensorflow = tf_facts["signatures"]
    assert key in tensorflow, f"{key} exists in zoobot.pytorch but not in zoobot.tensorflow"
    ours = normalise(key, TORCH[key], "pytorch")
    theirs = normalise(key, tensorflow[key], "tensorflow")
    if ours != theirs:
        lines = [f"{key}: signatures differ"]
        for i in range(max(len(ours), len(theirs))):
            a = ours[i] if i < len(ours) else None
            b = theirs[i] if i < len(theirs) else None
            if a != b:
                lines.append(f"  parameter {i}: pytorch {a} vs tensorflow {b}")
        pytest.fail("\n".join(lines))


def test_the_shared_names_the_user_documentation_relies_on_are_all_compared():
    required = ["datasets.GalaxyDataModule", "estimators.define_model.ZoobotTree",
                "estimators.define_model.get_encoder", "estimators.define_model.get_dirichlet_head",
                "estimators.define_model.get_pytorch_encoder|get_tensorflow_encoder",
                "estimators.define_model.get_pytorch_dirichlet_head|get_tensorflow_dirichlet_head",
                "training.losses.get_multiquestion_loss", "training.losses.calculate_multiquestion_loss",
                "training.train.train", "training.train.train_default_zoobot_from_scratch",
                "training.finetune.FinetuneableZoobotClassifier", "training.finetune.FinetuneableZoobotRegressor",
                "training.finetune.FinetuneableZoobotTree", "training.finetune.get_trainer",
                "training.finetune.FinetuneableZoobotClassifier.load_from_checkpoint",
                "predictions.predict_on_catalog.predict", "training.representations.get_representations",
                "training.representations.ZoobotEncoder"]
    assert not [key for key in required if key not in BOTH]
