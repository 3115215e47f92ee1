"""What a result is: one identity for the stage cache, a job's key and sweep resume.

A cached stage (clean victim, surrogate, frozen features, clustering) and a whole job are
named by the same three things, computed here and nowhere else:

- the config less the settings that cannot change a number (`schema.results_config`);
- the content of what they read: the dataset's file digests and the SHA-256 of any local
  weights file a model names (a URL's published file carries its hash in its name);
- the source of the code they run: every module a ``_target_`` names, nested ones included
  (a regime's network, backbone and head), with the ``subpop_runner`` modules those import
  (`cache.code_fingerprint`).

So editing ``models/mlp.py`` changes the clean victim's key and the job key alike, and a
resumed sweep never skips a job whose result came from other code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from subpop_runner.cache import PACKAGE, PACKAGE_DIR, code_fingerprint, user_source
from subpop_runner.data.digest import file_sha256
from subpop_runner.schema import results_config

# The config groups whose code each stage runs, besides the stages and the training layer.
STAGE_GROUPS = {
    "clean_victim": ("dataset", "model"),
    "surrogate": ("dataset", "model"),
    "features": ("dataset", "model"),
    "embedding": ("dataset", "selector"),
    "clustering": ("dataset", "model", "selector"),
}
# What a stage's result depends on besides its own inputs.
STAGE_CONFIG = ("dataset", "model", "trainer", "seed")
# A job runs every group; the pipeline module brings in the steps, metrics and tracking.
JOB_GROUPS = ("dataset", "model", "selector", "attack", "defense", "trainer")
SHARED_CODE = ("subpop_runner.stages", "subpop_runner.training.base")


def code_modules(cfg: DictConfig, groups: tuple[str, ...], *extra: str) -> tuple[str, ...]:
    """The modules run by ``groups``: every class of ours or of the user's own (a plugin on the
    Python path) their configs instantiate, nested ``_target_``s included, plus ``extra`` and
    the code every stage shares; sorted. (Installed packages' code, such as Lightning's
    ``Trainer``, is pinned by the lock, not hashed.)"""
    modules = {t.rsplit(".", 1)[0] for group in groups for t in targets_of(cfg[group])}
    targets = {m for m in modules if m.startswith(f"{PACKAGE}.") or user_source(m) is not None}
    return tuple(sorted(targets | {*SHARED_CODE, *extra}))


def targets_of(node: object) -> list[str]:
    """Every ``_target_`` in a config node, nested ones included."""
    if isinstance(node, DictConfig | dict):
        own = [node["_target_"]] if "_target_" in node else []
        nested = (targets_of(child) for key, child in node.items() if key != "_target_")
        return own + [target for found in nested for target in found]
    return []


def stage_code(cfg: DictConfig, stage: str) -> tuple[str, ...]:
    """Modules a cached stage runs (its cache key covers their source)."""
    return code_modules(cfg, STAGE_GROUPS[stage])


def inputs(cfg: DictConfig, data_files: dict[str, str]) -> dict[str, Any]:
    """What every stage of this job depends on besides its own parts: the config sections
    that shape it, the data by content, and local weights files by content."""
    config = results_config(cfg)
    return {key: config[key] for key in STAGE_CONFIG} | {
        "dataset_files": data_files,
        "weights_files": weights_files(cfg),
    }


def job_key(cfg: DictConfig, data_files: dict[str, str], package_dir: Path = PACKAGE_DIR) -> str:
    """A job's identity (tag ``subpop.job_key``, what resume skips on): its whole config less
    what cannot change a number, the content it reads, and the code of every group."""
    code = code_modules(cfg, JOB_GROUPS, "subpop_runner.pipeline")
    text = json.dumps(
        {
            "config": results_config(cfg),
            "data": data_files,
            "weights": weights_files(cfg),
            "code": code_fingerprint(code, package_dir),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def weights_files(cfg: DictConfig) -> dict[str, str]:
    """SHA-256 of each local file a ``weights`` key of the model or selector names: the
    same path may hold other weights tomorrow, and those would give other numbers."""
    found: dict[str, str] = {}
    for group in ("model", "selector"):
        for key, value in _weights_values(cfg[group], group):
            path = Path(str(value)).expanduser()
            if path.is_file():
                found[key] = file_sha256(path)
    return found


def _weights_values(node: object, prefix: str) -> list[tuple[str, object]]:
    if not isinstance(node, DictConfig | dict):
        return []
    found = []
    for key, child in node.items():
        if key == "weights" and child is not None:
            found.append((f"{prefix}.{key}", child))
        found += _weights_values(child, f"{prefix}.{key}")
    return found
