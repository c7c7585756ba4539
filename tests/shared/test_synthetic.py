"""The synthetic Galaxy Zoo generator: determinism, votes down the tree, probabilities, priors,
file formats and learnability (images must carry the labels' information).

Independent references: the tree is walked here with ``schema.questions`` / ``asked_after`` (not the
generator's own vote plan); learnability is judged by a logistic regression on hand-made image
features, scored out of sample.
"""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoobot.shared import schemas
from zoobot.shared.images import load_image
from zoobot.shared.synthetic import (
    GENERATOR_VERSION,
    PROBABILITY_FLOOR,
    answer_probabilities,
    make_synthetic_catalog,
    render_galaxy,
    sample_latents,
    sample_votes,
    supported_questions,
    synthetic_galaxy,
)
from zoobot.shared.synthetic.answers import galaxy_features

DR5 = schemas.decals_dr5_ortho_schema


@pytest.fixture(scope="module")
def catalog_48px(tmp_path_factory):
    """300 galaxies, 48 px png: shared by the marginal, learnability and regeneration tests."""
    root = tmp_path_factory.mktemp("synthetic48")
    catalog, label_cols = make_synthetic_catalog(root, n_galaxies=300, image_size=48, seed=3, file_format="png",
                                                 progress=False)
    return catalog, label_cols


def latents_sample(n, prior="train", seed=0):
    return [sample_latents(np.random.default_rng([seed, 99, i]), prior) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# catalog contents and determinism
# ---------------------------------------------------------------------------------------------

def test_catalog_columns_follow_the_galaxy_zoo_convention(catalog_48px):
    catalog, label_cols = catalog_48px
    assert label_cols == DR5.label_cols
    assert catalog["id_str"].is_unique and len(catalog) == 300
    for col in label_cols:
        assert catalog[col].dtype == np.int64
        assert f"{col}_fraction" in catalog and f"{col}_true-prob" in catalog
    for q in DR5.questions:
        assert f"{q.text}_total-votes" in catalog
    assert set(catalog["kind"]) <= {"elliptical", "disk", "merger", "artifact"}
    assert (catalog["generator_version"] == GENERATOR_VERSION).all()
    assert all(pd.Series(catalog["file_loc"]).map(lambda f: f.startswith("/")))
    # fractions: count / question total, NaN where the question got no votes
    q = DR5.get_question("disk-edge-on-dr5")
    total = catalog[f"{q.text}_total-votes"]
    frac = catalog["disk-edge-on-dr5_yes_fraction"]
    assert frac[total == 0].isna().all()
    np.testing.assert_allclose(frac[total > 0], (catalog["disk-edge-on-dr5_yes"] / total)[total > 0])
    # the catalog is also written next to the images
    on_disk = pd.read_parquet(pd.Series(catalog["file_loc"]).iloc[0].rsplit("/images/", 1)[0] + "/catalog.parquet")
    pd.testing.assert_frame_equal(on_disk, catalog)


def test_same_seed_same_pixels_and_votes_different_seed_different(tmp_path):
    a, _ = make_synthetic_catalog(tmp_path / "a", n_galaxies=6, image_size=32, seed=5, file_format="png",
                                  progress=False)
    b, _ = make_synthetic_catalog(tmp_path / "b", n_galaxies=6, image_size=32, seed=5, file_format="png",
                                  progress=False)
    c, _ = make_synthetic_catalog(tmp_path / "c", n_galaxies=6, image_size=32, seed=6, file_format="png",
                                  progress=False)
    pd.testing.assert_frame_equal(a.drop(columns="file_loc"), b.drop(columns="file_loc"))
    for fa, fb in zip(a["file_loc"], b["file_loc"]):
        np.testing.assert_array_equal(np.asarray(Image.open(fa)), np.asarray(Image.open(fb)))
    assert not np.array_equal(np.asarray(Image.open(a["file_loc"][0])), np.asarray(Image.open(c["file_loc"][0])))
    assert not a[DR5.label_cols].equals(c[DR5.label_cols])


def test_a_galaxy_regenerated_alone_equals_its_catalog_row(catalog_48px):
    catalog, label_cols = catalog_48px
    for index in (0, 17, 299):
        galaxy = synthetic_galaxy(index, seed=3, image_size=48)
        row = catalog.iloc[index]
        assert galaxy.id_str == row["id_str"]
        np.testing.assert_array_equal(galaxy.image, load_image(row["file_loc"]))
        np.testing.assert_array_equal(galaxy.counts, row[label_cols].to_numpy(dtype=np.int64))
        np.testing.assert_allclose(galaxy.probabilities, row[[c + "_true-prob" for c in label_cols]].to_numpy(float))
        assert galaxy.kind == row["kind"]


def test_votes_do_not_depend_on_image_size_or_catalog_length():
    small = synthetic_galaxy(7, seed=1, image_size=16)
    large = synthetic_galaxy(7, seed=1, image_size=40)
    np.testing.assert_array_equal(small.counts, large.counts)
    assert small.latents == large.latents


def test_worker_pool_gives_identical_output(tmp_path):
    one, _ = make_synthetic_catalog(tmp_path / "one", n_galaxies=70, image_size=16, seed=2, file_format="png",
                                    progress=False)
    two, _ = make_synthetic_catalog(tmp_path / "two", n_galaxies=70, image_size=16, seed=2, file_format="png",
                                    n_workers=2, progress=False)
    pd.testing.assert_frame_equal(one.drop(columns="file_loc"), two.drop(columns="file_loc"))
    for fa, fb in zip(one["file_loc"][::10], two["file_loc"][::10]):
        np.testing.assert_array_equal(np.asarray(Image.open(fa)), np.asarray(Image.open(fb)))


# ---------------------------------------------------------------------------------------------
# votes and probabilities
# ---------------------------------------------------------------------------------------------

def check_tree_totals(counts, schema):
    """Walk the tree with the schema's own links: every child's total is its parent answer's count."""
    totals = {q.text: int(counts[q.start_index:q.end_index + 1].sum()) for q in schema.questions}
    for q in schema.questions:
        if q.asked_after is not None:
            assert totals[q.text] == counts[q.asked_after.index], (q.text, counts)
    return totals


def test_votes_follow_the_dr5_tree():
    seen_n = set()
    for i, lat in enumerate(latents_sample(300)):
        rng = np.random.default_rng([1, i])
        counts = sample_votes(answer_probabilities(lat, DR5), DR5, rng)
        assert counts.dtype == np.int64 and (counts >= 0).all()
        totals = check_tree_totals(counts, DR5)
        n = totals["smooth-or-featured-dr5"]
        seen_n.add(n)
        # merging is asked of everyone who did not answer "artifact"
        assert totals["merging-dr5"] == n - counts[DR5.get_answer("smooth-or-featured-dr5_artifact").index]
    assert seen_n == {5, 40}


@pytest.mark.parametrize("name", ["gz2", "gz2_ortho", "desi", "decals_dr8_ortho", "decals_dr12_ortho",
                                  "gz_candels_ortho", "gz_hubble_ortho"])
def test_votes_follow_other_trees(name):
    schema = schemas.get_schema(name)
    for i, lat in enumerate(latents_sample(40, seed=1)):
        counts = sample_votes(answer_probabilities(lat, schema), schema, np.random.default_rng(i), n_volunteers=40)
        totals = check_tree_totals(counts, schema)
        first = schema.questions[0]
        assert totals[first.text] == 40


def test_merged_campaign_trees_give_each_galaxy_one_campaign():
    schema = schemas.decals_all_campaigns_ortho_schema
    campaigns = ("-dr12", "-dr5", "-dr8")
    shown = []
    for i, lat in enumerate(latents_sample(30)):
        counts = sample_votes(answer_probabilities(lat, schema), schema, np.random.default_rng(i), n_volunteers=40)
        check_tree_totals(counts, schema)
        with_votes = [c for c in campaigns if counts[schema.get_question("smooth-or-featured" + c).start_index:
                                                     schema.get_question("smooth-or-featured" + c).end_index + 1].sum()]
        assert len(with_votes) == 1
        shown.append(with_votes[0])
        outside = [q for q in schema.questions if not q.text.endswith(with_votes[0])]
        assert all(counts[q.start_index:q.end_index + 1].sum() == 0 for q in outside)
    assert set(shown) == set(campaigns)


def test_probabilities_sum_to_one_with_floor_for_every_prebuilt_schema():
    lats = latents_sample(8, prior="shifted") + latents_sample(8)
    for name in schemas.list_schemas():
        schema = schemas.get_schema(name)
        for lat in lats:
            p = answer_probabilities(lat, schema)
            assert p.shape == (schema.n_answers,)
            assert (p >= PROBABILITY_FLOOR - 1e-12).all(), name
            for start, end in schema.question_index_groups:
                assert p[start:end + 1].sum() == pytest.approx(1.0, abs=1e-12), name


def test_marginals_roughly_as_designed(catalog_48px):
    """Mean vote fractions (over galaxies asked) near synthetic.md's table, with loose bounds."""
    catalog, _ = catalog_48px

    def mean_fraction(col):
        return catalog[col + "_fraction"].mean()  # NaN (not asked) rows skipped

    assert 0.35 < mean_fraction("smooth-or-featured-dr5_smooth") < 0.60
    assert 0.35 < mean_fraction("smooth-or-featured-dr5_featured-or-disk") < 0.62
    assert 0.01 < mean_fraction("smooth-or-featured-dr5_artifact") < 0.09
    assert 0.10 < mean_fraction("disk-edge-on-dr5_yes") < 0.30
    assert 0.22 < mean_fraction("has-spiral-arms-dr5_yes") < 0.45
    assert mean_fraction("bar-dr5_no") > 0.65
    assert mean_fraction("bar-dr5_strong") < mean_fraction("bar-dr5_weak")
    arm_two = mean_fraction("spiral-arm-count-dr5_2")
    assert arm_two == max(mean_fraction(f"spiral-arm-count-dr5_{a}") for a in ("1", "2", "3", "4", "more-than-4"))
    assert mean_fraction("merging-dr5_none") > 0.6
    # children get few votes, as in GZD-5
    asked = catalog["disk-edge-on-dr5_total-votes"]
    assert 3 <= asked[asked > 0].median() <= 15


def test_shifted_prior_is_smaller_fainter_blurrier_with_more_mergers():
    train = latents_sample(600, "train")
    shifted = latents_sample(600, "shifted")

    def mean(lats, key):
        return np.mean([lat[key] for lat in lats])

    assert mean(shifted, "re") < 0.9 * mean(train, "re")
    assert mean(shifted, "log_snr") < mean(train, "log_snr") - 0.15
    assert mean(shifted, "psf") > 1.1 * mean(train, "psf")
    merger_frac = [np.mean([lat["kind"] == "merger" for lat in lats]) for lats in (train, shifted)]
    assert merger_frac[1] > merger_frac[0] + 0.04
    visibility = [np.mean([galaxy_features(lat)["v"] for lat in lats]) for lats in (train, shifted)]
    assert visibility[1] < visibility[0]


def test_rings_are_rare_naturally_and_balanced_on_request(tmp_path):
    natural = np.mean([galaxy_features(lat)["ring_vis"] > 0 and
                       answer_probabilities(lat, schemas.gz_rings_schema)[0] > 0.5
                       for lat in latents_sample(2000)])
    assert 0.015 < natural < 0.08
    catalog, label_cols = make_synthetic_catalog(tmp_path, n_galaxies=60, image_size=24, label="ring",
                                                 ring_fraction=0.5, progress=False)
    assert label_cols == ["ring"]
    assert set(catalog["ring"]) == {0, 1} and catalog["ring"].dtype == np.int64
    assert 0.3 < catalog["ring"].mean() < 0.7
    # the binary label agrees with the true probability, and votes follow it
    assert ((catalog["ring_yes_true-prob"] > 0.5).astype(int) == catalog["ring"]).all()
    assert catalog.loc[catalog["ring"] == 1, "ring_yes_fraction"].mean() > 0.6
    assert catalog.loc[catalog["ring"] == 0, "ring_yes_fraction"].mean() < 0.3
    assert ((catalog["ring_yes"] + catalog["ring_no"]).isin([5, 40])).all()
    # conditioned galaxies regenerate alone too
    galaxy = synthetic_galaxy(11, image_size=24, label="ring", ring_fraction=0.5)
    row = catalog.iloc[11]
    assert galaxy.id_str == row["id_str"] and galaxy.ring == row["ring"]
    np.testing.assert_array_equal(galaxy.counts, row[["ring_yes", "ring_no"]].to_numpy(dtype=np.int64))


def test_ring_set_non_rings_match_rings_in_size_and_brightness(tmp_path):
    """Naturally, rings are bright and large (a ring must be visible), so brightness and size alone would
    find them. In a conditioned ring set, non-rings are drawn like the rings, with the ring taken away
    and the same total light: a logistic regression on size and brightness, in the latents or in the
    pixels, stays near chance (issue 13: ROC AUC <= 0.6)."""
    from zoobot.shared.metrics import ring_baseline_auc
    from zoobot.shared.synthetic.render import galaxy_flux

    natural = latents_sample(3000, seed=5)
    natural = pd.DataFrame({"re": [lat["re"] for lat in natural], "log_snr": [lat["log_snr"] for lat in natural],
                            "ring": [int(answer_probabilities(lat, schemas.gz_rings_schema)[0] > 0.5)
                                     for lat in natural]})
    assert ring_baseline_auc(natural, features=["re", "log_snr"]) > 0.68  # measured 0.72

    galaxies = [synthetic_galaxy(i, image_size=8, label="ring", ring_fraction=0.5, seed=7) for i in range(300)]
    matched = pd.DataFrame({"re": [g.latents["re"] for g in galaxies], "ring": [g.ring for g in galaxies],
                            "log_flux": [np.log10(galaxy_flux(g.latents, 32)) for g in galaxies]})
    assert 0.35 < matched.ring.mean() < 0.65
    assert ring_baseline_auc(matched, features=["re", "log_flux"]) <= 0.6

    catalog, _ = make_synthetic_catalog(tmp_path, n_galaxies=300, image_size=64, label="ring", ring_fraction=0.5,
                                        seed=8, progress=False)
    assert ring_baseline_auc(catalog) <= 0.6  # image total flux and second moment


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_format,channels", [("jpg", 3), ("png", 1), ("fits", 3), ("fits", 1)])
def test_image_formats_are_readable(tmp_path, file_format, channels):
    catalog, _ = make_synthetic_catalog(tmp_path, n_galaxies=3, image_size=24, channels=channels,
                                        file_format=file_format, progress=False)
    assert all(f.endswith("." + file_format) for f in catalog["file_loc"])
    for index, file_loc in enumerate(catalog["file_loc"]):
        image = load_image(file_loc, fits_scaling="none")
        assert image.shape == (24, 24, channels)
        expected = synthetic_galaxy(index, image_size=24, channels=channels).image
        if file_format == "fits":
            assert image.dtype == np.float32
            np.testing.assert_allclose(image, expected / 255.0, atol=1e-6)
        elif file_format == "png":
            np.testing.assert_array_equal(image, expected)
        else:  # jpeg is lossy (and the noise incompressible), but close
            assert np.abs(image.astype(float) - expected).mean() < 5
            assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.9


def test_render_galaxy_shape_and_dtype():
    lat = sample_latents(np.random.default_rng(1))
    for size in (8, 33, 64):
        image = render_galaxy(lat, size, np.random.default_rng(0))
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match="at least 8"):
        render_galaxy(lat, 4)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_unknown_question_lists_the_supported_ones():
    schema = schemas.Schema({"smooth-or-featured": ["_smooth", "_featured-or-disk", "_artifact"],
                             "has-tentacles": ["_yes", "_no"]},
                            {"smooth-or-featured": None, "has-tentacles": None}, name="aliens")
    with pytest.raises(ValueError, match=r"has-tentacles.*aliens.*Supported questions.*spiral-arm-count"):
        answer_probabilities(sample_latents(np.random.default_rng(0)), schema)
    with pytest.raises(ValueError, match="has-tentacles"):
        make_synthetic_catalog("/nonexistent/never/written", n_galaxies=2, schema=schema, progress=False)
    assert "bar" in supported_questions()


def test_unknown_answer_set_is_an_error():
    schema = schemas.Schema({"bar": ["_long", "_short"]}, {"bar": None})
    with pytest.raises(ValueError, match=r"'bar'.*_long.*Supported answer sets"):
        answer_probabilities(sample_latents(np.random.default_rng(0)), schema)


@pytest.mark.parametrize("kwargs,match", [
    (dict(prior="weird"), "Unknown synthetic prior 'weird'"),
    (dict(label="class"), "Unknown synthetic label"),
    (dict(file_format="tiff"), "Unknown image file format"),
    (dict(channels=2), "number of channels"),
    (dict(n_galaxies=0), "n_galaxies"),
    (dict(image_size=4), "image_size"),
    (dict(label="ring", schema=DR5), "do not pass a schema"),
    (dict(ring_fraction=1.5), "ring_fraction"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_catalog(tmp_path, **{"n_galaxies": 2, "progress": False, **kwargs})


def test_schema_by_name_and_gz2(tmp_path):
    catalog, label_cols = make_synthetic_catalog(tmp_path, n_galaxies=4, image_size=16, schema="gz2",
                                                 progress=False)
    assert label_cols == schemas.gz2_schema.label_cols
    assert "bulge-size_just-noticeable" in catalog and "something-odd_yes_true-prob" in catalog


# ---------------------------------------------------------------------------------------------
# learnability: the pixels carry the labels
# ---------------------------------------------------------------------------------------------

def image_features(file_loc):
    """Hand-made features: elongation from second moments, core colour (blue - red), concentration."""
    from scipy import ndimage

    image = load_image(file_loc).astype(np.float64) / 255.0
    grey = ndimage.gaussian_filter(image.mean(axis=-1), 1.0)
    size = grey.shape[0]
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    central = (yy - centre) ** 2 + (xx - centre) ** 2 < (0.3 * size) ** 2  # ignore most field stars
    weights = np.where(central, np.clip(grey - np.median(grey[~central]), 0, None), 0) ** 2
    total = weights.sum() + 1e-12
    cy, cx = (weights * yy).sum() / total, (weights * xx).sum() / total
    dy, dx = yy - cy, xx - cx
    cov = np.array([[(weights * dy * dy).sum(), (weights * dx * dy).sum()],
                    [(weights * dx * dy).sum(), (weights * dx * dx).sum()]]) / total
    lo, hi = np.linalg.eigvalsh(cov)
    elongation = 1.0 - np.sqrt(max(lo, 1e-9) / max(hi, 1e-9))
    core = dy * dy + dx * dx < (0.08 * size) ** 2
    colour = (image[..., 2] - image[..., 0])[core].mean()
    concentration = weights[core].sum() / total
    return [elongation, colour, concentration]


def logistic_fit_predict(x_train, y_train, x_test, steps=25):
    """Plain logistic regression (Newton's method, small ridge), standardised features."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-12
    a = np.c_[np.ones(len(x_train)), (x_train - mu) / sd]
    b = np.c_[np.ones(len(x_test)), (x_test - mu) / sd]
    w = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-a @ w))
        hessian = a.T @ (a * (p * (1 - p))[:, None]) + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hessian, a.T @ (p - y_train) + 1e-3 * w)
    return b @ w


def auc(labels, scores):
    """Area under the ROC curve = P(score of a positive > score of a negative) (Mann-Whitney)."""
    labels = np.asarray(labels, bool)
    ranks = np.argsort(np.argsort(scores)) + 1.0
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def out_of_sample_auc(features, labels, folds=3):
    labels = np.asarray(labels, float)
    fold = np.arange(len(labels)) % folds
    scores = np.empty(len(labels))
    for k in range(folds):
        scores[fold == k] = logistic_fit_predict(features[fold != k], labels[fold != k], features[fold == k])
    return auc(labels, scores)


def test_auc_helper_against_brute_force():
    rng = np.random.default_rng(0)
    labels, scores = rng.random(40) < 0.4, rng.random(40)
    pairs = [(s_pos > s_neg) for s_pos in scores[labels] for s_neg in scores[~labels]]
    assert auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_image_features_predict_edge_on_and_smooth_vs_featured(catalog_48px):
    catalog, _ = catalog_48px
    features = np.array([image_features(f) for f in catalog["file_loc"]])
    edge_on = (catalog["disk-edge-on-dr5_yes_true-prob"] > 0.5).to_numpy()
    featured = (catalog["smooth-or-featured-dr5_featured-or-disk_true-prob"] > 0.5).to_numpy()
    assert 15 < edge_on.sum() < 150 and 60 < featured.sum() < 240
    assert out_of_sample_auc(features, edge_on) > 0.7
    assert out_of_sample_auc(features, featured) > 0.65
    # a shuffled label is not predictable: the check can fail
    shuffled = np.random.default_rng(0).permutation(edge_on)
    assert out_of_sample_auc(features, shuffled) < 0.62
