"""Registry of zoobot's pretrained encoders and the metadata needed to use them.

The encoders released with Zoobot live on the Hugging Face Hub as ``mwalmsley/zoobot-encoder-<timm
name>``. Each entry records where the weights are, which architecture reads them, the channels, input
size and pixel scale expected, which backends load it and how to cite it. Nothing here downloads.

Names accepted everywhere a pretrained model is named:

- a short registry name, e.g. ``'zoobot-encoder-convnext_nano'`` (see :func:`list_pretrained`);
- ``'hf-hub:owner/repo'`` (or the legacy ``'hf_hub:owner/repo'``, normalised to ``'hf-hub:'``). Repos in the registry get their registry entry; any other repo is accepted too, with
  ``architecture=None``: the backend then reads it from the repo's ``config.json``;
- ``'local-dir:/path/to/folder'``, a folder holding the same files as a hub repo.

Names containing ``greyscale`` are single-channel models.

.. note::
   The hub ids, licences and greyscale variants below follow the upstream Zoobot documentation as we
   know it; they are **to be verified against the Hub model cards** (no network access was available
   when this registry was written). Unlisted ``hf-hub:`` repos keep working regardless.

Examples
--------
>>> cfg = get_pretrained_cfg('hf_hub:mwalmsley/zoobot-encoder-convnext_nano')
>>> cfg.name, cfg.hub_id, cfg.architecture, cfg.channels
('zoobot-encoder-convnext_nano', 'mwalmsley/zoobot-encoder-convnext_nano', 'convnext_nano', 3)
>>> normalise_name('hf_hub:mwalmsley/zoobot-encoder-convnext_nano')
'hf-hub:mwalmsley/zoobot-encoder-convnext_nano'
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from zoobot.shared.errors import unknown_option_error

__all__ = [
    "DEFAULT_PRETRAINED",
    "TENSORFLOW_ARCHITECTURES",
    "PretrainedCfg",
    "get_pretrained_cfg",
    "hub_id_for",
    "list_pretrained",
    "normalise_name",
    "hub_reachable",
    "hub_unavailable_error",
    "use_cli_spelling",
]

HUB_OWNER = "mwalmsley"
DEFAULT_PRETRAINED = "zoobot-encoder-convnext_nano"

_CITATION = (
    "Walmsley et al. (2023), 'Zoobot: Adaptable Deep Learning Models for Galaxy Morphology', JOSS 8(85), 5312, "
    "doi:10.21105/joss.05312; and Walmsley et al. (2024), 'Scaling Laws for Galaxy Images', arXiv:2404.02973."
)
_LICENCE = "see the Hub model card (to be verified)"


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """Metadata of one pretrained encoder.

    Attributes
    ----------
    name : str
        Registry name (e.g. ``'zoobot-encoder-convnext_nano'``), or the normalised ``hf-hub:`` /
        ``local-dir:`` name for models outside the registry.
    hub_id : str or None
        ``owner/repo`` on the Hugging Face Hub (None for ``local-dir:`` models).
    architecture : str or None
        timm model name; None when it must be read from the repo's ``config.json``.
    channels : int
        1 (greyscale) or 3 (RGB).
    input_size : int
        Side of the square input the model was trained on.
    pixel_scale : str
        ``'0-1'``: floats in [0, 1], no mean/std normalisation (the zoobot convention).
    backend_files : dict
        ``backend -> file name`` of the weights each backend loads from the repo; ``None`` where a
        backend cannot load the model (TensorFlow reads the timm ``model.safetensors`` through
        keras-hub, which converts the EfficientNet and ResNet encoders but not ConvNeXt or MaxViT).
        Models outside the registry list both: the TensorFlow backend checks the architecture in their
        ``config.json``.
    licence, citation : str
    """

    name: str
    hub_id: str | None
    architecture: str | None
    channels: int
    input_size: int = 224
    pixel_scale: str = "0-1"
    backend_files: dict = dataclasses.field(default_factory=lambda: {"pytorch": "model.safetensors",
                                                                     "tensorflow": "model.safetensors"})
    licence: str = _LICENCE
    citation: str = _CITATION

    @property
    def backends(self) -> tuple:
        """The backends that load this encoder, e.g. ``('pytorch', 'tensorflow')``."""
        return tuple(backend for backend, file in self.backend_files.items() if file)

    @property
    def local_dir(self) -> Path | None:
        """The folder of a ``local-dir:`` model, else None."""
        if self.name.startswith("local-dir:"):
            return Path(self.name[len("local-dir:"):]).expanduser()
        return None

    @property
    def in_registry(self) -> bool:
        """True for the registered zoobot encoders."""
        return self.name in _REGISTRY


#: Registered architectures keras-hub converts from timm, so the TensorFlow backend loads them
#: (tests/tensorflow/test_pretrained_encoders.py checks this list against keras-hub itself).
TENSORFLOW_ARCHITECTURES = frozenset({"efficientnet_b0", "resnet18", "resnet50", "resnet101"})


def _entry(architecture: str, greyscale: bool = False, repo: str | None = None) -> PretrainedCfg:
    if repo is None:
        repo = f"zoobot-encoder-{'greyscale-' if greyscale else ''}{architecture}"
    files = {"pytorch": "model.safetensors",
             "tensorflow": "model.safetensors" if architecture in TENSORFLOW_ARCHITECTURES else None}
    return PretrainedCfg(name=repo, hub_id=f"{HUB_OWNER}/{repo}", architecture=architecture,
                         channels=1 if greyscale else 3, backend_files=files)


_COLOUR = [
    "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "maxvit_tiny_rw_224", "maxvit_small_tf_224", "maxvit_base_tf_224", "maxvit_large_tf_224",
    "efficientnet_b0", "tf_efficientnetv2_s",
    "resnet18", "resnet50", "resnet101",
]
_GREYSCALE = ["convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small", "convnext_base",
              "efficientnet_b0", "resnet18", "resnet50"]

_REGISTRY: dict[str, PretrainedCfg] = {}
for _arch in _COLOUR:
    _cfg = _entry(_arch)
    _REGISTRY[_cfg.name] = _cfg
for _arch in _GREYSCALE:
    _cfg = _entry(_arch, greyscale=True)
    _REGISTRY[_cfg.name] = _cfg
del _arch, _cfg

# other spellings of registry names -> registry name
_ALIASES: dict[str, str] = {"zoobot-encoder-efficientnetv2_s": "zoobot-encoder-tf_efficientnetv2_s"}
_ALIASES.update({  # '-greyscale' as a suffix
    f"zoobot-encoder-{arch}-greyscale": f"zoobot-encoder-greyscale-{arch}" for arch in _GREYSCALE
})
_BY_HUB_ID = {cfg.hub_id.lower(): cfg for cfg in _REGISTRY.values()}
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def list_pretrained(channels: int | None = None, backend: str | None = None) -> list[str]:
    """Registry names of the pretrained encoders.

    Parameters
    ----------
    channels : {None, 1, 3}
        Only greyscale (1) or colour (3) models; None lists all.
    backend : {None, 'pytorch', 'tensorflow'}
        Only the models that backend loads; None lists all.

    Returns
    -------
    list of str

    Examples
    --------
    >>> 'zoobot-encoder-convnext_nano' in list_pretrained()
    True
    >>> all('greyscale' in name for name in list_pretrained(channels=1))
    True
    >>> 'zoobot-encoder-efficientnet_b0' in list_pretrained(backend='tensorflow')
    True
    """
    if channels not in (None, 1, 3):
        raise unknown_option_error("number of channels", channels, ["None", "1", "3"])
    if backend not in (None, "pytorch", "tensorflow"):
        raise unknown_option_error("backend", backend, ["None", "pytorch", "tensorflow"])
    return [name for name, cfg in _REGISTRY.items()
            if (channels is None or cfg.channels == channels) and (backend is None or backend in cfg.backends)]


def _accepted_forms() -> list[str]:
    return list_pretrained() + ["hf-hub:<owner>/<repo>", "hf_hub:<owner>/<repo>", "local-dir:<folder>"]


def normalise_name(name: str) -> str:
    """The canonical spelling of a pretrained-model name: ``'hf-hub:owner/repo'`` or ``'local-dir:folder'``.

    ``'hf_hub:'`` becomes ``'hf-hub:'`` (the form timm understands); a short registry name (in any alias
    spelling, e.g. ``'zoobot-encoder-convnext_nano-greyscale'``) or a bare registry ``owner/repo``
    becomes its ``'hf-hub:'`` name; registry repos get the registry's capitalisation; ``'local-dir:'``
    names are kept.

    Parameters
    ----------
    name : str

    Returns
    -------
    str

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        (E13) For a name that is none of the accepted forms; the message lists them.

    Examples
    --------
    >>> normalise_name('hf_hub:mwalmsley/zoobot-encoder-convnext_nano')
    'hf-hub:mwalmsley/zoobot-encoder-convnext_nano'
    >>> normalise_name('zoobot-encoder-convnext_nano')
    'hf-hub:mwalmsley/zoobot-encoder-convnext_nano'
    >>> normalise_name('local-dir:/models/my-encoder')
    'local-dir:/models/my-encoder'
    """
    return _resolve(name)[0]


def _resolve(name) -> tuple:
    """(canonical name, registry entry or None)."""
    if not isinstance(name, str):
        raise TypeError(f"A pretrained-model name must be a string, got {type(name).__name__}: {name!r}.")
    text = name.strip()
    if text.startswith("local-dir:"):
        if not text[len("local-dir:"):]:
            raise ValueError("'local-dir:' must be followed by a folder, e.g. 'local-dir:/path/to/encoder'.")
        return text, None
    for prefix in ("hf-hub:", "hf_hub:"):
        if text.startswith(prefix):
            repo = text[len(prefix):]
            if not _HUB_REPO.match(repo):
                raise ValueError(
                    f"{name!r} is not a valid Hugging Face Hub name: expected '{prefix}<owner>/<repo>', "
                    f"e.g. 'hf-hub:{HUB_OWNER}/{DEFAULT_PRETRAINED}'."
                )
            cfg = _BY_HUB_ID.get(repo.lower())
            return (f"hf-hub:{cfg.hub_id}", cfg) if cfg is not None else (f"hf-hub:{repo}", None)
    cfg = _REGISTRY.get(_ALIASES.get(text, text)) or _BY_HUB_ID.get(text.lower())
    if cfg is not None:
        return f"hf-hub:{cfg.hub_id}", cfg
    raise unknown_option_error("pretrained model name", name, _accepted_forms())


def get_pretrained_cfg(name: str = DEFAULT_PRETRAINED) -> PretrainedCfg:
    """The :class:`PretrainedCfg` of a pretrained-model name (see :func:`normalise_name` for the forms).

    Models outside the registry (``hf-hub:`` repos, ``local-dir:`` folders) get a config with
    ``architecture=None`` (the backend reads ``config.json``), 224-pixel input, and 1 channel if the
    name contains ``greyscale``, else 3.

    Raises
    ------
    ValueError
        (E13) For an unknown name.

    Examples
    --------
    >>> get_pretrained_cfg('zoobot-encoder-greyscale-convnext_nano').channels
    1
    >>> get_pretrained_cfg('hf-hub:someone/my-encoder').architecture is None
    True
    """
    canonical, cfg = _resolve(name)
    if cfg is not None:
        return cfg
    channels = 1 if "greyscale" in canonical.lower() else 3
    hub_id = canonical[len("hf-hub:"):] if canonical.startswith("hf-hub:") else None
    cfg = PretrainedCfg(name=canonical, hub_id=hub_id, architecture=None, channels=channels,
                        licence="unknown (not a registered zoobot encoder)",
                        citation="unknown (not a registered zoobot encoder)")
    return _with_folder_record(cfg) if cfg.local_dir is not None else cfg


def _with_folder_record(cfg: PretrainedCfg) -> PretrainedCfg:
    """A ``local-dir:`` config completed from the folder's own files, where they say more.

    ``zoobot.json`` (written by ``zoobot export``) gives the architecture, channels and the input
    size the encoder was trained at; else timm's ``config.json`` (``architecture``,
    ``model_args.in_chans``, ``pretrained_cfg.input_size``). Unreadable files change nothing.
    """
    import json

    record = {}
    for file in ("config.json", "zoobot.json"):  # the zoobot record wins
        try:
            data = json.loads((cfg.local_dir / file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        input_size = (data.get("pretrained_cfg") or {}).get("input_size") or [None]
        found = {"architecture": data.get("architecture"),
                 "channels": data.get("channels") or (data.get("model_args") or {}).get("in_chans") or input_size[0],
                 "input_size": data.get("input_size") or input_size[-1]}
        record.update({key: value for key, value in found.items() if value is not None})
    if record.get("channels") not in (1, 3):
        record.pop("channels", None)
    return dataclasses.replace(cfg, **record)


def hub_id_for(name: str) -> str | None:
    """``owner/repo`` on the Hugging Face Hub for a pretrained-model name (None for ``local-dir:``).

    Examples
    --------
    >>> hub_id_for('zoobot-encoder-convnext_nano')
    'mwalmsley/zoobot-encoder-convnext_nano'
    """
    return get_pretrained_cfg(name).hub_id


# ---------------------------------------------------------------------------------------------
# failing fast, and saying so in the caller's terms, when the Hub cannot be used
# ---------------------------------------------------------------------------------------------

#: How a model name is written where the call came from: the Python argument, or the CLI flag.
_NAME_SPELLING = {"python": "name='{}'", "cli": "--name {}"}
_INTERFACE = {"now": "python"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def use_cli_spelling(enabled: bool = True) -> None:
    """Word hub errors for a command-line user (``--name local-dir:...``); the ``zoobot`` command calls this."""
    _INTERFACE["now"] = "cli" if enabled else "python"


def hub_reachable(timeout: float = 3.0) -> tuple:
    """``(True, '')`` if a TCP connection to the Hub endpoint opens within ``timeout`` s, else ``(False, why)``.

    huggingface_hub retries a failed connection 5 times with back-off (about 23 s) before giving up;
    this one quick check lets a machine without network fail at once. With a proxy configured the
    endpoint cannot be probed directly, so the answer is ``(True, '')`` and huggingface_hub decides.

    Examples
    --------
    >>> import os
    >>> os.environ['HF_ENDPOINT'] = 'http://127.0.0.1:9'   # the discard port: nothing listens
    >>> hub_reachable(timeout=1)[0]
    False
    >>> del os.environ['HF_ENDPOINT']
    """
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True, ""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as err:
        return False, f"{host}:{port} cannot be reached: {err}"


def hub_unavailable_error(repo: str, why: str, cache_dir, *, offline_set: bool, what: str = "pretrained encoder",
                          filename: str | None = None) -> FileNotFoundError:
    """The error for a Hub model that is neither cached nor downloadable, with the ways out.

    The wording follows the caller (see :func:`use_cli_spelling`) and mentions ``HF_HUB_OFFLINE``
    only when it is set.
    """
    repo_id, _, revision = repo.partition("@")
    rev = f" --revision {revision}" if revision else ""
    spelling = _NAME_SPELLING[_INTERFACE["now"]]
    network = "unset HF_HUB_OFFLINE and run once with network access" if offline_set else \
        "run once on a machine with network access"
    files = f" {filename}" if filename else ""
    return FileNotFoundError(
        f"The {what} 'hf-hub:{repo}' is not in the local Hugging Face cache ({cache_dir}) and {why}. Either:\n"
        f"  1. {network} so that it is downloaded and cached (HF_HOME chooses the cache folder); or\n"
        f"  2. on a machine with network, run `hf download {repo_id}{files}{rev}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}{files}{rev}`) and copy its cache folder here (set HF_HOME to it); or\n"
        f"  3. copy a folder holding config.json and model.safetensors and use "
        f"{spelling.format('local-dir:/path/to/folder')}."
    )
