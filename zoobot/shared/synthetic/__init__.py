"""Synthetic Galaxy Zoo data: galaxy images with known morphology, true answer probabilities and
volunteer votes drawn down any supported decision tree.

It stands in for real data where none can be downloaded (tests, the demo, offline machines). Images
look like DECaLS colour cutouts and their morphology sets the labels, so a model learns something
non-trivial; the true probabilities give oracle losses. How it works: docs/api/shared/synthetic.md;
measured properties: docs/benchmarks.md.

Modules, one concept each:

- :mod:`.latents`: what a galaxy is (:func:`sample_latents`, priors ``'train'`` / ``'shifted'``);
- :mod:`.render`: how it looks (:func:`render_galaxy`);
- :mod:`.answers`: what volunteers would answer (:func:`answer_probabilities`);
- :mod:`.votes`: how many said so, down the tree (:func:`sample_votes`);
- :mod:`.catalog`: one galaxy (:func:`synthetic_galaxy`) or a whole catalog on disk
  (:func:`make_synthetic_catalog`).

Examples
--------
>>> import tempfile
>>> from zoobot.shared.synthetic import make_synthetic_catalog
>>> catalog, label_cols = make_synthetic_catalog(tempfile.mkdtemp(), n_galaxies=8, label='ring',
...                                              image_size=32, progress=False)
>>> label_cols
['ring']
"""
from .answers import PROBABILITY_FLOOR, answer_probabilities, supported_questions
from .catalog import GENERATOR_VERSION, SyntheticGalaxy, make_synthetic_catalog, synthetic_galaxy
from .latents import PRIORS, sample_latents
from .render import render_galaxy
from .votes import sample_votes

__all__ = [
    "GENERATOR_VERSION",
    "PRIORS",
    "PROBABILITY_FLOOR",
    "SyntheticGalaxy",
    "answer_probabilities",
    "make_synthetic_catalog",
    "render_galaxy",
    "sample_latents",
    "sample_votes",
    "supported_questions",
    "synthetic_galaxy",
]
