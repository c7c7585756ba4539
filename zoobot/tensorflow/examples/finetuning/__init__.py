"""Finetuning examples of the TensorFlow backend (twins of ``zoobot/pytorch/examples/finetuning``)."""
