"""Minimal finetuning with TensorFlow (no TFRecord shards): see zoobot/tensorflow/examples/finetune_minimal.py.

Run ``python finetune_minimal.py --help``, or ``python finetune_minimal.py --smoke`` for a quick offline run.
"""
from zoobot.tensorflow.examples.finetune_minimal import get_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
