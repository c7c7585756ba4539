"""Figures for checking a model by eye: example galaxies, vote fractions, calibration, training curves.

Each function draws one PNG with matplotlib's object-oriented API (no ``pyplot``: no global
state, no display needed) and returns the path it wrote. matplotlib is imported when a function
is called; without it they raise :class:`~zoobot.shared.errors.MissingDependencyError` (E12) with
the install line (``pip install "zoobot[plots]"``).

- :func:`plot_galaxy_grid`: galaxies with their true label and predicted probability;
- :func:`plot_vote_fractions`: predicted vs true vote fractions, one panel per question;
- :func:`plot_calibration`: reliability diagram of a binary classifier;
- :func:`plot_reliability`: a tree model's vote fractions and intervals against what was observed
  (from :func:`zoobot.shared.metrics.reliability_table` and :func:`~zoobot.shared.metrics.coverage_curve`);
- :func:`plot_training_curves`: losses per epoch from ``metrics.csv`` files (both backends).

The numbers behind the figures come from :func:`calibration_table` and :func:`epoch_metrics`, so
reports can print them too.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from zoobot.shared import plots
>>> rng = np.random.default_rng(0)
>>> p = rng.uniform(size=200); y = (rng.uniform(size=200) < p).astype(int)
>>> path = plots.plot_calibration(y, p, os.path.join(tempfile.mkdtemp(), 'calibration.png'))
>>> os.path.basename(path)
'calibration.png'
"""
from __future__ import annotations

import math
import pathlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot.shared.errors import missing_dependency

__all__ = [
    "plot_galaxy_grid",
    "plot_vote_fractions",
    "plot_calibration",
    "plot_reliability",
    "plot_training_curves",
    "calibration_table",
    "epoch_metrics",
]

_CORRECT, _WRONG = "#1a7f37", "#cf222e"
# metric pairs (train, validation) drawn by plot_training_curves, first match wins
_LOSS_PAIRS = (
    ("train/supervised_loss", "validation/supervised_loss"),
    ("finetuning/train_loss", "finetuning/val_loss"),
)


def _figure(width: float, height: float):
    """A new matplotlib Figure with an Agg canvas (E12 if matplotlib is missing)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_dependency("matplotlib", "Plotting", "plots") from None
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, save_loc) -> pathlib.Path:
    path = pathlib.Path(save_loc)
    if path.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        from zoobot.shared.errors import unknown_option_error

        raise unknown_option_error("figure file extension", path.suffix or str(path), [".png", ".pdf", ".svg", ".jpg"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------
# example galaxies
# ---------------------------------------------------------------------------------------------

def plot_galaxy_grid(file_locs: Sequence[str], save_loc, true_labels: Sequence[int] | None = None,
                     predicted_probs: Sequence[float] | None = None, class_name: str = "ring", ncols: int = 4,
                     threshold: float = 0.5, title: str | None = None, id_strs: Sequence[str] | None = None):
    """A grid of galaxy images captioned with the true label and the predicted probability.

    Captions are green where the prediction (``predicted_probs >= threshold``) matches the true label,
    red where it does not.

    Parameters
    ----------
    file_locs : sequence of str
        Image files (jpg/png/fits), shown as they are on disk.
    save_loc : str or path-like
        Output figure (.png recommended).
    true_labels : sequence of int, optional
        1 = ``class_name``, 0 = not.
    predicted_probs : sequence of float, optional
        Predicted probability of ``class_name``.
    class_name : str
        Name of the positive class in captions.
    ncols : int
        Panels per row.
    threshold : float
        Probability from which a prediction counts as ``class_name``.
    title : str, optional
        Figure title.
    id_strs : sequence of str, optional
        Shown above each caption.

    Returns
    -------
    pathlib.Path
        The figure written.
    """
    from zoobot.shared.images import load_image

    file_locs = list(file_locs)
    n = len(file_locs)
    if n == 0:
        raise ValueError("plot_galaxy_grid needs at least one image")
    for name, values in (("true_labels", true_labels), ("predicted_probs", predicted_probs), ("id_strs", id_strs)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} images")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig = _figure(2.3 * ncols, 2.65 * nrows + (0.4 if title else 0))
    for i, loc in enumerate(file_locs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        image = load_image(loc)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray")
        else:
            ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        lines, color = [], "black"
        if id_strs is not None:
            lines.append(str(id_strs[i]))
        if true_labels is not None:
            lines.append(f"true: {class_name if int(true_labels[i]) == 1 else 'no ' + class_name}")
        if predicted_probs is not None:
            p = float(predicted_probs[i])
            lines.append(f"p({class_name}) = {p:.2f}")
            if true_labels is not None:
                color = _CORRECT if (p >= threshold) == (int(true_labels[i]) == 1) else _WRONG
        if lines:
            ax.set_title("\n".join(lines), fontsize=9, color=color)
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2 if color != "black" else 0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, save_loc)


# ---------------------------------------------------------------------------------------------
# vote fractions of a decision-tree model
# ---------------------------------------------------------------------------------------------

def plot_vote_fractions(true_fractions, predicted_fractions, schema, save_loc, asked=None, min_asked: float = 0.5,
                        ncols: int = 4, title: str | None = None, true_label: str = "true vote fraction"):
    """Predicted vs true vote fractions, one panel per question, one colour per answer.

    Parameters
    ----------
    true_fractions, predicted_fractions : array-like, (galaxy, answer)
        In ``schema.label_cols`` order (e.g. from :func:`zoobot.shared.stats.vote_fractions`).
        NaN entries (questions nobody answered) are left out.
    schema : Schema
    save_loc : str or path-like
    asked : array-like (galaxy, question), optional
        Probability each question is asked; galaxies below ``min_asked`` are left out of that panel
        (default: computed from ``true_fractions`` with :func:`zoobot.shared.stats.proportion_asked`).
    min_asked : float
        See ``asked``.
    ncols : int
        Panels per row.
    title : str, optional
    true_label : str
        x-axis label.

    Returns
    -------
    pathlib.Path
        The figure written. Each panel shows the mean absolute error over its points.
    """
    from zoobot.shared.stats import proportion_asked

    true_fractions = np.asarray(true_fractions, dtype=np.float64)
    predicted_fractions = np.asarray(predicted_fractions, dtype=np.float64)
    if true_fractions.shape != predicted_fractions.shape or true_fractions.ndim != 2:
        raise ValueError(f"true_fractions {true_fractions.shape} and predicted_fractions {predicted_fractions.shape} "
                         "must both be (galaxy, answer)")
    if true_fractions.shape[1] != schema.n_answers:
        raise ValueError(f"Expected {schema.n_answers} answers (schema {schema.name!r}), got "
                         f"{true_fractions.shape[1]}")
    if asked is None:
        asked = proportion_asked(np.nan_to_num(true_fractions, nan=0.0), schema)
    asked = np.asarray(asked, dtype=np.float64)

    n_questions = len(schema.questions)
    ncols = max(1, min(int(ncols), n_questions))
    nrows = math.ceil(n_questions / ncols)
    fig = _figure(3.3 * ncols, 3.25 * nrows + (0.4 if title else 0))
    colors = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a"]
    for q, question in enumerate(schema.questions):
        ax = fig.add_subplot(nrows, ncols, q + 1)
        keep = asked[:, q] >= min_asked
        errors = []
        for a, answer in enumerate(question.answers):
            column = answer.index
            x, y = true_fractions[keep, column], predicted_fractions[keep, column]
            ok = np.isfinite(x) & np.isfinite(y)
            errors.append(np.abs(x[ok] - y[ok]))
            ax.scatter(x[ok], y[ok], s=7, alpha=0.55, color=colors[a % len(colors)],
                       label=answer.text.split("_", 1)[-1], linewidths=0)
        ax.plot([0, 1], [0, 1], color="0.4", lw=0.8, ls="--")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        all_errors = np.concatenate(errors) if errors else np.array([])
        mae = f"MAE {all_errors.mean():.3f}" if all_errors.size else "no galaxies"
        ax.set_title(f"{question.text}\n{int(keep.sum())} galaxies, {mae}", fontsize=8.5)
        ax.tick_params(labelsize=7)
        if q % ncols == 0:
            ax.set_ylabel("predicted vote fraction", fontsize=8)
        if q >= n_questions - ncols:
            ax.set_xlabel(true_label, fontsize=8)
        ax.legend(fontsize=6.5, loc="best", markerscale=1.5, handletextpad=0.2, borderpad=0.3, framealpha=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, save_loc)


# ---------------------------------------------------------------------------------------------
# calibration of a binary classifier
# ---------------------------------------------------------------------------------------------

def calibration_table(y_true, p_pred, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table: per equal-width probability bin, the mean prediction and the observed rate.

    The rates are :func:`sklearn.calibration.calibration_curve`'s (``strategy='uniform'``), with the
    empty bins kept (count 0, NaN rates) and a count and standard error per bin. As in scikit-learn, a
    bin holds ``low < p <= high`` (the first one also ``p = 0``).

    Parameters
    ----------
    y_true : array-like of {0, 1}
    p_pred : array-like of float in [0, 1]
        Predicted probability of class 1. NaN predictions (failed images) are left out.
    n_bins : int

    Returns
    -------
    pandas.DataFrame
        Columns ``bin_low``, ``bin_high``, ``count``, ``mean_predicted``, ``observed_rate`` and
        ``observed_err`` (binomial standard error); empty bins have count 0 and NaN rates.

    Raises
    ------
    ValueError
        Labels other than 0/1, probabilities outside [0, 1], or lengths that differ.
    MissingDependencyError
        Without scikit-learn (``pip install "zoobot[pca]"``).

    Examples
    --------
    >>> calibration_table([0, 1, 1, 1], [0.1, 0.7, 0.8, 0.9], n_bins=2)[['count', 'observed_rate']].values.tolist()
    [[1.0, 0.0], [3.0, 1.0]]
    """
    try:
        from sklearn.calibration import calibration_curve
    except ImportError:
        raise missing_dependency("scikit-learn", "Calibration tables", "pca") from None
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    p_pred = np.asarray(p_pred, dtype=np.float64).ravel()
    if y_true.shape != p_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but p_pred has {p_pred.size}")
    finite = np.isfinite(p_pred) & np.isfinite(y_true)
    y_true, p_pred = y_true[finite], p_pred[finite]
    if ((y_true != 0) & (y_true != 1)).any():
        raise ValueError("y_true must hold 0/1 labels")
    if ((p_pred < 0) | (p_pred > 1)).any():
        raise ValueError("p_pred must hold probabilities in [0, 1]")
    edges = np.linspace(0, 1, int(n_bins) + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], p_pred), minlength=n_bins).astype(float)
    rate, mean_predicted = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    if y_true.size:
        rate[count > 0], mean_predicted[count > 0] = calibration_curve(y_true, p_pred, n_bins=n_bins,
                                                                       strategy="uniform", pos_label=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(np.maximum(rate * (1 - rate), 0.25 / count) / count)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": count,
                         "mean_predicted": mean_predicted, "observed_rate": rate, "observed_err": err})


def plot_calibration(y_true, p_pred, save_loc, n_bins: int = 10, title: str | None = None,
                     class_name: str = "class 1"):
    """Reliability diagram (observed rate vs predicted probability) with a histogram of predictions.

    Parameters
    ----------
    y_true : array-like of {0, 1}
    p_pred : array-like of float
        Predicted probability of class 1.
    save_loc : str or path-like
    n_bins : int
        Equal-width probability bins.
    title : str, optional
    class_name : str
        Name of class 1 in axis labels.

    Returns
    -------
    pathlib.Path
    """
    table = calibration_table(y_true, p_pred, n_bins)
    fig = _figure(4.6, 5.2)
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.08)
    ax = fig.add_subplot(grid[0])
    hist = fig.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="perfectly calibrated")
    filled = table[table["count"] > 0]
    ax.errorbar(filled["mean_predicted"], filled["observed_rate"], yerr=filled["observed_err"], marker="o",
                color="#0969da", capsize=3, label="model (±1σ)")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"observed fraction that are {class_name}")
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(labelbottom=False)
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(p_pred, dtype=float).ravel()
    ok = np.isfinite(p)
    edges = np.linspace(0, 1, n_bins + 1)
    hist.hist([p[ok & (y == 1)], p[ok & (y == 0)]], bins=edges, stacked=True, color=["#1a7f37", "#bf8700"],
              label=[f"true {class_name}", f"not {class_name}"])
    hist.set_xlabel(f"predicted probability of {class_name}")
    hist.set_ylabel("galaxies")
    hist.legend(fontsize=7, loc="upper center")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, save_loc)


def plot_reliability(reliability: pd.DataFrame, coverage: pd.DataFrame, save_loc, title: str | None = None):
    """Two panels: predicted vs observed vote fraction, and interval coverage vs nominal level.

    Parameters
    ----------
    reliability : pandas.DataFrame
        From :func:`zoobot.shared.metrics.reliability_table`.
    coverage : pandas.DataFrame
        From :func:`zoobot.shared.metrics.coverage_curve` (``nominal``, ``vote_coverage`` and, when
        the truth is known, ``truth_coverage``).
    save_loc : str or path-like
    title : str, optional

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, os
    >>> from zoobot.shared import metrics
    >>> from zoobot.shared.schemas import Schema
    >>> schema = Schema({'a': ['_x', '_y']}, {'a': None})
    >>> alpha, votes = [[3.0, 1.0], [1.0, 2.0]], [[30, 10], [2, 3]]
    >>> path = plot_reliability(metrics.reliability_table([[0.75, 0.25], [0.33, 0.67]], votes, schema),
    ...                         metrics.coverage_curve(alpha, votes, schema), os.path.join(tempfile.mkdtemp(), 'r.png'))
    >>> path.name
    'r.png'
    """
    fig = _figure(8.4, 4.0)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="perfectly calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
    filled = reliability[reliability["count"] > 0]
    left.errorbar(filled["mean_predicted"], filled["observed_rate"], yerr=filled["observed_err"], marker="o",
                  color="#0969da", capsize=3, label="model (±1σ)")
    left.set_xlabel("predicted vote fraction")
    left.set_ylabel("observed fraction of votes")
    left.set_title("vote fractions", fontsize=10)
    right.plot(coverage["nominal"], coverage["vote_coverage"], marker="o", color="#0969da",
               label="observed votes")
    if "truth_coverage" in coverage.columns:
        right.plot(coverage["nominal"], coverage["truth_coverage"], marker="s", color="#1a7f37",
                   label="true probabilities")
    right.set_xlabel("nominal interval level")
    right.set_ylabel("fraction inside the interval")
    right.set_title("interval coverage", fontsize=10)
    for ax in (left, right):
        ax.legend(loc="upper left", fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, save_loc)


# ---------------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------------

def epoch_metrics(metrics_csv) -> pd.DataFrame:
    """One row per epoch from a ``metrics.csv`` (Lightning's CSVLogger or zoobot's Keras logger).

    Rows logged at different steps of an epoch (train and validation are logged separately) are
    merged by taking each column's last non-missing value.

    Parameters
    ----------
    metrics_csv : str or path-like

    Returns
    -------
    pandas.DataFrame
        Indexed by ``epoch``.
    """
    frame = pd.read_csv(metrics_csv)
    if "epoch" not in frame.columns:
        raise ValueError(f"{metrics_csv} has no 'epoch' column; columns: {list(frame.columns)[:10]}")
    frame = frame.dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.groupby("epoch").last()


def plot_training_curves(runs: Mapping[str, object], save_loc, title: str | None = None):
    """Training and validation loss per epoch, one panel per run.

    Parameters
    ----------
    runs : mapping of str to path
        Panel title -> ``metrics.csv`` (e.g. ``{'pretraining': 'run/logs/metrics.csv'}``). The losses
        drawn are ``train/supervised_loss`` + ``validation/supervised_loss`` (training from scratch) or
        ``finetuning/train_loss`` + ``finetuning/val_loss`` (finetuning), whichever the file has;
        finetuning accuracy, when logged, goes on a second axis.
    save_loc : str or path-like
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    if not runs:
        raise ValueError("plot_training_curves needs at least one run")
    fig = _figure(4.8 * len(runs), 3.6 + (0.3 if title else 0))
    for i, (name, path) in enumerate(runs.items()):
        ax = fig.add_subplot(1, len(runs), i + 1)
        metrics = epoch_metrics(path)
        pair = next((p for p in _LOSS_PAIRS if p[0] in metrics.columns or p[1] in metrics.columns), None)
        if pair is None:
            raise ValueError(f"{path} has none of the loss columns {[c for p in _LOSS_PAIRS for c in p]}")
        epochs = set()
        for column, label, color in ((pair[0], "train", "#0969da"), (pair[1], "validation", "#cf222e")):
            if column in metrics.columns:
                series = metrics[column].dropna()
                epochs.update(series.index + 1)
                ax.plot(series.index + 1, series.values, marker="o", ms=3.5, color=color, label=f"{label} loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel(pair[0].split("/")[-1].replace("train_", "").replace("_", " "))
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if "finetuning/val_acc" in metrics.columns:
            twin = ax.twinx()
            acc = metrics["finetuning/val_acc"].dropna()
            line = twin.plot(acc.index + 1, acc.values, ls=":", marker="s", ms=3, color="#1a7f37",
                             label="validation accuracy")
            twin.set_ylabel("accuracy")
            twin.set_ylim(0, 1.02)
            handles, labels = handles + line, labels + ["validation accuracy"]
        # below the panel, so that it never hides a curve
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(labels),
                  frameon=False)
        if 0 < len(epochs) <= 15:
            ax.set_xticks(sorted(epochs))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, save_loc)
