"""Framework-free core of zoobot: decision trees, schemas, catalogs, images, the loss oracle,
statistics of predictions, prediction files, synthetic data and the pretrained registry.

Only numpy, pandas, scipy and Pillow are imported here (astropy, h5py, matplotlib and
scikit-learn lazily, where used). ``from zoobot.shared import label_metadata, schemas`` works
as in the upstream documentation.
"""
