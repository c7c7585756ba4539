"""Training with PyTorch Lightning: :mod:`~zoobot.pytorch.training.losses` (the Dirichlet-multinomial loss),
:mod:`~zoobot.pytorch.training.train_with_pytorch_lightning` (training from scratch),
:mod:`~zoobot.pytorch.training.finetune` (finetuning pretrained encoders) and
:mod:`~zoobot.pytorch.training.representations`.

``from zoobot.pytorch.training import losses, finetune, train_with_pytorch_lightning`` imports the submodules.
"""
