"""`pipeline.run` in-process: every experiment preset stays alive, failures are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from subpop_runner import pipeline
from subpop_runner.attacks.label_flip import LabelFlip

from .conftest import ROOT

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("adult_*.yaml"))


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"tracking.dir={tmp_path / 'mlruns'}", *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_runs_in_smoke_size(tmp_path, preset):
    result = pipeline.run(config(tmp_path, f"experiment={preset}", "size=smoke"))
    assert result.summary["subpops/attacked"] >= 1
    assert len(result.subpops) >= result.summary["subpops/attacked"]


def test_a_job_that_raises_leaves_a_failed_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("attack exploded")

    monkeypatch.setattr(LabelFlip, "poison", broken)
    cfg = config(tmp_path, "experiment=smoke_adult", "trainer.max_epochs=2")
    with pytest.raises(RuntimeError, match="attack exploded"):
        pipeline.run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke_adult")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweeps_compose_with_alpha_axis(sweep):
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        cfg = compose(
            sweep,
            overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.params["attack.alpha"] == "0.5,1,2"
    assert cfg.name in {"adult_cluster_match", "adult_feature_match"}
