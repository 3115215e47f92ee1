"""An optimisation attack inside the pipeline: the attacker's model trains on aux, the run
logs the moved poisons' provenance, the objective per step and the attack's time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from subpop_runner import pipeline

from .conftest import small_adult_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("attack", ["gradient_optimization", "influence"])
def test_an_optimised_attack_logs_moved_poisons_and_its_objective(tmp_path, attack, monkeypatch):
    cfg = small_adult_config(
        tmp_path, "selector.k=3", f"attack={attack}", "attack.steps=3", epochs=3
    )
    calls: list = []
    real = pipeline.victim_trainer

    def recording(*args):
        train = real(*args)

        def record(part, poison_sets, description="victims", keep=None):
            calls.append((description, part, list(poison_sets)))
            return train(part, poison_sets, description=description, keep=keep)

        return record

    monkeypatch.setattr(pipeline, "victim_trainer", recording)
    result = pipeline.run(cfg)
    descriptions = [c[0] for c in calls]
    assert "attacker's model on aux" in descriptions
    attacker = calls[descriptions.index("attacker's model on aux")]
    aux = calls[descriptions.index("surrogate on aux")][1]
    assert np.array_equal(attacker[1].x, aux.x) and [len(p) for p in attacker[2]] == [0]
    store = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = store.get_run(result.run_id)
    assert run.data.metrics["attack_seconds"] > 0
    steps = [m.step for m in store.get_metric_history(result.run_id, "attack_objective")]
    assert steps[0] == 0 and len(steps) >= 2
    files = {a.path for a in store.list_artifacts(result.run_id)}
    assert {"poison.csv", "attack_trace.csv"} <= files
    poison = pd.read_csv(store.download_artifacts(result.run_id, "poison.csv", str(tmp_path)))
    assert {"aux_index", "label", "moved_l2", "moved_linf"} <= set(poison.columns)
    assert (poison["moved_l2"] > 0).any() and np.isfinite(poison["moved_l2"]).all()
