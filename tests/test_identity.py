"""One identity for cached stages, job keys and resume: every module a config instantiates,
nested ones included, and every setting or file that changes a number."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from subpop_runner.cache import PACKAGE_DIR, code_fingerprint, module_closure
from subpop_runner.identity import (
    JOB_GROUPS,
    STAGE_GROUPS,
    code_modules,
    inputs,
    job_key,
    stage_code,
)

from .conftest import ROOT

DATA = {"adult.data": "0" * 64}


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """The package's source, to edit without touching the real one."""
    copy = tmp_path / "subpop_runner"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit(package: Path, module: str) -> None:
    """Edit a module's source, as a user would between two sweep commands (a new process:
    the fingerprint is memoised per process)."""
    path = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
    path.write_text(path.read_text() + "\n# an edit\n")
    code_fingerprint.cache_clear()


@pytest.mark.parametrize(
    ("overrides", "nested"),
    [
        ([], "subpop_runner.models.mlp"),  # the MLP is the fixed-features regime's head
        (["model=vgg_ll"], "subpop_runner.models.vgg"),  # a backbone
        (["model=vgg_ll"], "subpop_runner.models.linear_head"),
        (["model=conv"], "subpop_runner.models.conv"),  # an end-to-end network
    ],
)
def test_editing_a_nested_module_changes_the_job_key_and_the_stage_keys(
    package_copy, overrides, nested
):
    cfg = compose_config(*overrides)
    stage = stage_code(cfg, "clean_victim")
    before = job_key(cfg, DATA, package_copy), code_fingerprint(stage, package_copy)
    edit(package_copy, nested)
    after = job_key(cfg, DATA, package_copy), code_fingerprint(stage, package_copy)
    assert before[0] != after[0], "a resumed sweep would skip jobs computed by the old code"
    assert before[1] != after[1], "the cache would return a clean victim of the old code"


def test_code_a_job_does_not_run_leaves_its_keys_alone(package_copy):
    cfg = compose_config()  # ClusterMatch: FeatureMatch's code is not run
    stage = stage_code(cfg, "clean_victim")
    before = job_key(cfg, DATA, package_copy), code_fingerprint(stage, package_copy)
    edit(package_copy, "subpop_runner.selectors.feature_match")
    assert (job_key(cfg, DATA, package_copy), code_fingerprint(stage, package_copy)) == before


@pytest.mark.parametrize("model", ["mlp", "vgg_ll", "efficientnet_ft", "bert_ll"])
def test_a_job_key_covers_the_code_of_every_stage_it_runs(model):
    overrides = [f"model={model}"] + (["dataset=imdb"] if model.startswith("bert") else [])
    cfg = compose_config(*overrides)
    job_code = set(module_closure(code_modules(cfg, JOB_GROUPS, "subpop_runner.pipeline")))
    for stage in STAGE_GROUPS:
        assert set(module_closure(stage_code(cfg, stage))) <= job_code, stage


@pytest.mark.parametrize(
    ("model", "override"),
    [
        ("vgg_ll", "model.backbone.weights=/elsewhere/vgg16-00000000.pth"),
        ("vgg_ll", "model.backbone.weights=null"),
        ("efficientnet_ll", "model.backbone.pretrained=false"),
        ("efficientnet_ft", "model.network.backbone.pretrained=false"),
    ],
)
def test_other_backbone_weights_change_every_key(model, override):
    """Frozen features, the clean victim and the surrogate are keyed by `inputs`; the job by
    `job_key`: other weights give other numbers, so nothing may be reused."""
    one, other = compose_config(f"model={model}"), compose_config(f"model={model}", override)
    assert inputs(one, DATA) != inputs(other, DATA)
    assert job_key(one, DATA) != job_key(other, DATA)


def test_a_local_weights_file_enters_the_keys_by_content(tmp_path):
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(b"first weights")
    cfg = compose_config("model=vgg_ll", f"model.backbone.weights={weights}")
    before = inputs(cfg, DATA), job_key(cfg, DATA)
    weights.write_bytes(b"other weights")  # same path, other content
    assert inputs(cfg, DATA) != before[0]
    assert job_key(cfg, DATA) != before[1]


def test_settings_that_cannot_change_a_number_leave_the_job_key_alone():
    one = compose_config("tracking.dir=a", "training.memory_mb=64", "cache.dir=x")
    assert job_key(one, DATA) == job_key(compose_config("tracking.dir=b"), DATA)
    assert job_key(compose_config("seed=1"), DATA) != job_key(one, DATA)
