"""The import path of the TensorFlow data utilities in the users' documentation: ``zoobot.data_utils``.

``zoobot.data_utils`` and its submodules are the very module objects of :mod:`zoobot.tensorflow.data_utils`
(no copies, no warning; set up by :func:`zoobot.tensorflow._compat.alias_module`), so::

    from zoobot.data_utils import image_datasets, tfrecord_datasets, create_shards, ShardConfig

works as in the 2021 documentation. Importing it imports TensorFlow. See docs/components/loading_data.md.
"""
from zoobot.tensorflow._compat import alias_module

alias_module(__name__, "zoobot.tensorflow.data_utils",
             submodules=("image_datasets", "tfrecord_datasets", "create_shards", "create_tfrecord"))
