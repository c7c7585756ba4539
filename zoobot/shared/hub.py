"""Find pretrained encoders by name, framework-free: registry names, ``hf-hub:``/``hf_hub:`` repos, Hugging Face cache.

Both backends' ``estimators/pretrained_encoders.py`` build on these helpers: :func:`parse_encoder_name`
splits a name into its source, :func:`cached_hub_snapshot` finds a Hub repo in the local cache and
:func:`download_hub_snapshot` fetches it (through ``huggingface_hub``) unless ``HF_HUB_OFFLINE=1``.
See docs/pretrained_models.md.
"""
from __future__ import annotations

import logging
import os
import pathlib

from zoobot.shared.errors import missing_dependency, unknown_option_error

__all__ = ["WEIGHT_FILES", "parse_encoder_name", "hub_cache_dir", "hub_offline", "cached_hub_snapshot",
           "download_hub_snapshot", "parse_encoder_source", "registry_cfg"]

logger = logging.getLogger("zoobot.pretrained")

#: Weight files looked for in a Hub snapshot or local folder, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TRUE = {"1", "ON", "YES", "TRUE"}


# ---------------------------------------------------------------------------------------------
# name parsing
# ---------------------------------------------------------------------------------------------

def parse_encoder_name(name: str) -> tuple[str, str]:
    """Split an encoder name into ``(source, identifier)``.

    Parameters
    ----------
    name : str
        See the module docstring for the accepted forms.

    Returns
    -------
    (str, str)
        ``source`` is one of ``'tiny_cnn'``, ``'hf-hub'`` (identifier = ``owner/repo[@revision]``),
        ``'local-dir'`` (identifier = the folder), ``'registry'`` (identifier = the registry name)
        or ``'timm'`` (identifier = the timm architecture).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        (E13) if the name is empty, has an unknown ``source:`` prefix, or is neither a registry
        name nor a timm architecture.

    Examples
    --------
    >>> parse_encoder_name('hf_hub:mwalmsley/zoobot-encoder-convnext_nano')
    ('hf-hub', 'mwalmsley/zoobot-encoder-convnext_nano')
    >>> parse_encoder_name('tiny_cnn')
    ('tiny_cnn', 'tiny_cnn')
    >>> parse_encoder_name('efficientnet')
    ('timm', 'efficientnet_b0')
    """
    parsed = parse_encoder_source(name, _accepted_names_hint())
    if parsed is not None:
        return parsed
    from zoobot.shared.training_config import resolve_architecture_name

    architecture = resolve_architecture_name(name.strip())
    import timm

    if timm.is_model(architecture):
        return "timm", architecture
    raise unknown_option_error("encoder name", name, _accepted_names())


def parse_encoder_source(name, hint: str) -> tuple[str, str] | None:
    """The framework-free part of parsing an encoder name, shared by both backends.

    Returns ``('hf-hub', 'owner/repo[@revision]')``, ``('local-dir', folder)``, ``('tiny_cnn', 'tiny_cnn')``
    or ``('registry', name)``; ``None`` for a plain architecture name, which each backend resolves itself.
    ``hint`` (the accepted names) ends the error for an empty name.

    Examples
    --------
    >>> parse_encoder_source('local-dir:/models/enc', '')
    ('local-dir', '/models/enc')
    >>> parse_encoder_source('resnet18', '') is None
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"The encoder name must be a string, got {type(name).__name__}: {name!r}")
    name = name.strip()
    if not name:
        raise ValueError("The encoder name is empty. " + hint)
    prefix, sep, rest = name.partition(":")
    if sep and len(prefix) > 1:  # 'C:\\...' is a Windows path, not a prefix
        source = prefix.lower().replace("_", "-")
        if source == "hf-hub":
            if rest.count("/") != 1 or rest.startswith("/") or rest.split("@")[0].endswith("/"):
                raise ValueError(
                    f"Encoder name {name!r}: after 'hf-hub:' give a Hub repo id 'owner/repo' (optionally "
                    "'owner/repo@revision'), e.g. 'hf-hub:mwalmsley/zoobot-encoder-convnext_nano'."
                )
            return "hf-hub", rest
        if source == "local-dir":
            if not rest:
                raise ValueError(f"Encoder name {name!r}: give a folder after 'local-dir:'.")
            return "local-dir", rest
        raise unknown_option_error("encoder name prefix", prefix + ":", ["hf-hub:", "hf_hub:", "local-dir:"])
    if name == "tiny_cnn":
        return "tiny_cnn", name
    if registry_cfg(name) is not None:
        return "registry", name
    return None


def registry_cfg(name: str):
    """The registry entry for a short name, or None when the registry does not know it."""
    try:
        from zoobot.shared import pretrained

        return pretrained.get_pretrained_cfg(name)
    except (ImportError, ValueError, KeyError):
        return None


def _accepted_names() -> list[str]:
    try:
        from zoobot.shared import pretrained

        registry = [str(getattr(cfg, "name", cfg)) for cfg in pretrained.list_pretrained()]
    except Exception:  # the registry must never hide the real error
        registry = []
    return registry + ["tiny_cnn", "hf-hub:<owner>/<repo>", "local-dir:<folder>", "<any timm architecture>"]


def _accepted_names_hint() -> str:
    return "Accepted: " + ", ".join(_accepted_names()) + "."


# ---------------------------------------------------------------------------------------------
# the Hugging Face cache
# ---------------------------------------------------------------------------------------------

def hub_cache_dir() -> pathlib.Path:
    """The Hugging Face Hub cache folder, read from the environment at call time.

    ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.

    Kept rather than ``huggingface_hub.constants.HF_HUB_CACHE`` because that constant is read once, when
    huggingface_hub is imported; a notebook that sets ``HF_HOME`` afterwards still gets its cache here.
    The lookups themselves are huggingface_hub's (``try_to_load_from_cache``, ``hf_hub_download``).

    Returns
    -------
    pathlib.Path
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return pathlib.Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        home = os.environ["HF_HOME"]
    else:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                            "huggingface")
    return pathlib.Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub was imported."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _split_revision(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def cached_hub_snapshot(repo: str) -> pathlib.Path | None:
    """The cached snapshot folder of a Hub repo holding ``config.json`` and a weight file, or None.

    Never touches the network.

    Parameters
    ----------
    repo : str
        ``owner/repo`` or ``owner/repo@revision``.

    Returns
    -------
    pathlib.Path or None
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo_id, revision = _split_revision(repo)
    config = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(hub_cache_dir()), revision=revision)
    if not isinstance(config, str):
        return None
    snapshot = pathlib.Path(config).parent
    if any((snapshot / f).is_file() for f in WEIGHT_FILES):
        return snapshot
    return None


def _offline_missing_error(repo: str, why: str) -> FileNotFoundError:
    from zoobot.shared.pretrained import hub_unavailable_error

    return hub_unavailable_error(repo, why, hub_cache_dir(), offline_set=hub_offline())


def download_hub_snapshot(repo: str) -> pathlib.Path:
    """Return the snapshot folder of a Hub repo, downloading ``config.json`` + weights only if not cached.

    Parameters
    ----------
    repo : str
        ``owner/repo`` or ``owner/repo@revision``.

    Returns
    -------
    pathlib.Path
        Folder with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).

    Raises
    ------
    FileNotFoundError
        Not cached and ``HF_HUB_OFFLINE=1``, or the download failed (the message says what to do).
    MissingDependencyError
        (E12) if ``huggingface_hub`` is not installed.
    """
    snapshot = cached_hub_snapshot(repo)
    if snapshot is not None:
        logger.info("Using the cached Hub snapshot %s", snapshot)
        return snapshot
    if hub_offline():
        raise _offline_missing_error(repo, "HF_HUB_OFFLINE=1 forbids downloading it")
    from zoobot.shared.pretrained import hub_reachable

    reachable, why = hub_reachable()  # fail now rather than after huggingface_hub's ~23 s of retries
    if not reachable:
        raise _offline_missing_error(repo, f"the Hub cannot be reached ({why})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise missing_dependency("huggingface_hub", "Downloading pretrained encoders", "pytorch") from None
    repo_id, revision = _split_revision(repo)
    cache_dir = str(hub_cache_dir())
    try:
        config = hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache_dir)
        last_error = None
        for weights in WEIGHT_FILES:
            try:
                hf_hub_download(repo_id, weights, revision=revision, cache_dir=cache_dir)
                return pathlib.Path(config).parent
            except Exception as err:  # EntryNotFoundError: try the next file name
                if type(err).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                    raise
                last_error = err
        raise FileNotFoundError(
            f"The Hub repo {repo_id!r} has a config.json but none of the weight files {list(WEIGHT_FILES)}: "
            f"{last_error}"
        )
    except FileNotFoundError as err:
        if "none of the weight files" in str(err):
            raise
        raise _offline_missing_error(repo, f"downloading it failed ({type(err).__name__}: {err})") from err
    except Exception as err:  # network errors, unknown repo, offline mode set after import, ...
        raise _offline_missing_error(repo, f"downloading it failed ({type(err).__name__}: {err})") from err
