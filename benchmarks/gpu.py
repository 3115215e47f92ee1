"""`python -m benchmarks.gpu`: the full Table 5 Adult grid's training on a GPU.

The GPU path of the batched victims (`subpop_runner.training`, `models/mlp.py`), measured with
the library alone (no Hydra, no MLflow), so that it runs on an accelerator machine that has
only torch, Lightning and scikit-learn: real UCI Adult files from ``--data-dir``, per seed the
clean victim, the surrogate, ClusterMatch (k=100), every attacked subpopulation at
α ∈ {0.5, 1, 2} as one batch of victims, and the damage. Model settings are read from
``conf/model/mlp.yaml``, so they are the ones every run uses. Writes ``gpu.md`` and
``gpu.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import yaml

from benchmarks.reference import train_victims
from subpop_runner.attacks.label_flip import LabelFlip
from subpop_runner.data.adult import Adult
from subpop_runner.metrics import subpop_table, summarize
from subpop_runner.models.mlp import MLP
from subpop_runner.selectors.cluster_match import ClusterMatch
from subpop_runner.stages import clean_victim, surrogate_features

ROOT = Path(__file__).resolve().parent.parent
ALPHAS = (0.5, 1.0, 2.0)


def model_settings() -> dict:
    settings = yaml.safe_load((ROOT / "conf" / "model" / "mlp.yaml").read_text())["head"]
    return {k: v for k, v in settings.items() if not k.startswith("_") and k != "defaults"}


def grid(seed: int, data_dir: str, accelerator: str, batched: bool) -> dict:
    """One seed of the grid; wall times per stage and the worst-k damage per α."""
    times = {}
    start = time.perf_counter()
    splits = Adult(data_dir=data_dir).load(seed)
    trainer = partial(L.Trainer, accelerator=accelerator, devices=1, max_epochs=3000)
    train = partial(
        train_victims,
        model=partial(MLP, **model_settings()),
        trainer=trainer,
        seed=seed,
        batched=batched,
        memory_mb=512,
    )
    times["data"] = time.perf_counter() - start
    tic = time.perf_counter()
    clean = clean_victim(train, splits)
    times["clean victim"] = time.perf_counter() - tic
    tic = time.perf_counter()
    features = surrogate_features(train, splits, "hidden")
    selection = ClusterMatch(k=100, random_state=seed).select(splits, clean["proba_aux"], features)
    times["surrogate + clustering"] = time.perf_counter() - tic
    sets, owners = [], []
    for alpha in ALPHAS:
        attack = LabelFlip(alpha=alpha)
        sets += [attack.poison(s, splits.aux, splits.n_classes, seed) for s in selection.attacked]
        owners += [alpha] * len(selection.attacked)
    tic = time.perf_counter()
    victims = train(splits.train, sets, description="poisoned victims")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times["poisoned victims"] = time.perf_counter() - tic
    predictions = victims.predict(splits.test.x)
    summaries = {}
    for alpha in ALPHAS:
        rows = [i for i, a in enumerate(owners) if a == alpha]
        table = subpop_table(
            selection,
            [sets[i] for i in rows],
            clean["pred_test"],
            predictions[rows],
            splits.test.y,
        )
        summaries[alpha] = summarize(table, float((clean["pred_test"] == splits.test.y).mean()))
    times["total"] = time.perf_counter() - start
    return {
        "seed": seed,
        "device": victims.device,
        "software": f"torch {torch.__version__}, Lightning {L.__version__}",
        "victims": len(sets),
        "epochs": victims.epochs,
        "seconds": times,
        "clean_accuracy": summaries[1.0]["clean_accuracy"],
        "worst": {
            str(a): {str(k): summaries[a][f"target_damage/worst{k}"] for k in (1, 5, 10)}
            for a in ALPHAS
        },
    }


def markdown(results: list[dict], accelerator: str) -> str:
    stages = list(results[0]["seconds"])
    lines = [
        f"Accelerator `{accelerator}`, device {results[0]['device']}, "
        f"{results[0].get('software', '')}. Seconds per stage; damage is the mean target "
        "damage of the 5 most damaged subpopulations at α=1.",
        "",
        "| seed | victims | " + " | ".join(stages) + " | clean acc. | worst-5 at α=1 |",
        "|---|---|" + "---|" * len(stages) + "---|---|",
    ]
    for r in results:
        cells = " | ".join(f"{r['seconds'][s]:.1f} s" for s in stages)
        lines.append(
            f"| {r['seed']} | {r['victims']} | {cells} | {r['clean_accuracy']:.3f} | "
            f"{r['worst']['1.0']['5']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--one-at-a-time", action="store_true", help="training.batched=false")
    parser.add_argument("--out", default="reports")
    parser.add_argument("--render", help="only write gpu.md from this gpu.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        (out / "gpu.md").write_text(markdown(results, args.accelerator))
        return
    results = []
    for seed in args.seeds:
        results.append(grid(seed, args.data_dir, args.accelerator, not args.one_at_a_time))
        print(json.dumps(results[-1]), flush=True)
        (out / "gpu.json").write_text(json.dumps(results, indent=1))
    (out / "gpu.md").write_text(markdown(results, args.accelerator))
    print(markdown(results, args.accelerator))


if __name__ == "__main__":
    main()
