"""Find a checkpoint (local folder or Hugging Face repo id) and read its config.json.

config.json is read as both transformers layouts write it: v4 (`rope_theta`, `rope_scaling`,
`rope_local_base_freq`) and v5 (`rope_parameters`, per layer type for models with sliding attention).
`rope_parameters(config)` gives one normalised view, the way convert_hf_to_gguf builds its own.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ggq.errors import GGQError

# What a conversion needs from a hub repo; never the .bin/.pt/.gguf files next to them.
HUB_FILES = [
    "*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(src: str, revision: str | None = None) -> Path:
    """A local checkpoint folder, or the local snapshot of hub repo `org/name` (downloaded if needed)."""
    path = Path(src).expanduser()
    if path.is_dir():
        if revision:
            raise GGQError("--revision applies to hub repositories, not to a local folder", path)
        return path
    if path.exists():
        raise GGQError("not a folder: give a checkpoint folder or a hub repo id (org/name)", path)
    if not _REPO_ID.match(src):
        raise GGQError("no such folder, and not a hub repo id (org/name)", src)
    return _download(src, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    """snapshot_download honours HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE (then only the cache is used)."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # hub errors have many types (offline, 404, gated, network); all end here
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = " (HF_HUB_OFFLINE is set and it is not in the cache)" if offline else ""
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GGQError(f"cannot get hub repo{hint}: {first_line}", repo_id) from None


def load_config(model_dir: Path) -> dict:
    """config.json as a dict, with a multimodal model's `text_config` lifted to the top."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise GGQError("no config.json: not a Hugging Face checkpoint folder", model_dir)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GGQError(f"cannot read config: {e}", path) from None
    if not isinstance(config, dict):
        raise GGQError("config is not a JSON object", path)
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    return config


def architecture(config: dict) -> str:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise GGQError("config.json has no 'architectures' list")
    return archs[0]


def _first(config: dict, keys: tuple[str, ...]):
    for k in keys:
        if config.get(k) is not None:
            return config[k]
    return None


def rope_parameters(config: dict) -> dict:
    """{'rope_theta', 'rope_type', 'factor', ..., optionally 'sliding_attention': {...}} from v4 or v5 keys.

    v5 configs of models with sliding layers nest the parameters per layer type; v4 configs keep
    `rope_theta` beside a `rope_scaling` dict (whose older spelling of rope_type is `type`).
    """
    raw = config.get("rope_parameters", config.get("rope_scaling")) or {}
    if not isinstance(raw, dict):
        raise GGQError("config.json: rope_parameters/rope_scaling is not an object")
    params = dict(raw)
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {})
        if isinstance(params.get("sliding_attention"), dict):
            full["sliding_attention"] = dict(params["sliding_attention"])
        return full
    theta = _first(config, ("rope_theta", "rotary_emb_base"))
    local_theta = _first(config, ("rope_local_base_freq", "local_rope_theta"))
    if "rope_theta" not in params and theta is not None:
        params["rope_theta"] = theta
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    if local_theta is not None:
        params["sliding_attention"] = {"rope_theta": local_theta}
    return params


def model_name(model_dir: Path, src: str) -> str:
    """A human name for general.name and the default output file: the repo or folder name."""
    name = src.rstrip("/").split("/")[-1] if not Path(src).expanduser().is_dir() else Path(model_dir).resolve().name
    return name or "model"
