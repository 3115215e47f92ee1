"""Shared fixtures: small hand-made data, and UCI Adult files in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subpop_runner.training.victims import Victims
from subpop_runner.types import Part, Splits

ROOT = Path(__file__).resolve().parent.parent


def write_adult_files(folder: Path, n_rows: int = 240, seed: int = 0) -> Path:
    """``adult.data`` / ``adult.test`` with the original layout: 15 comma-separated columns,
    a space after each comma, '?' for missing values, a header line and '.'-suffixed labels in
    the test file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def row(i: int) -> str:
        rich = rng.random() < 0.3
        return ", ".join(
            str(v)
            for v in [
                int(rng.integers(17, 80)),
                rng.choice(["Private", "State-gov", "?"]),
                int(rng.integers(20000, 400000)),
                rng.choice(["HS-grad", "Bachelors", "Masters"]),
                int(rng.integers(5, 16)),
                rng.choice(["Never-married", "Married-civ-spouse"]),
                rng.choice(["Sales", "Exec-managerial", "?"]),
                rng.choice(["Husband", "Own-child"]),
                rng.choice(["White", "Black"]),
                rng.choice(["Male", "Female"]),
                int(rng.integers(0, 5000)) if rich else 0,
                0,
                int(rng.integers(20, 60)),
                rng.choice(["United-States", "Mexico"]),
                ">50K" if rich else "<=50K",
            ]
        )

    half = n_rows // 2
    (folder / "adult.data").write_text("\n".join(row(i) for i in range(half)) + "\n\n")
    test_rows = [row(i) + "." for i in range(n_rows - half)]
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(test_rows) + "\n")
    return folder


@pytest.fixture
def adult_dir(tmp_path: Path) -> Path:
    return write_adult_files(tmp_path / "adult")


def small_adult_config(tmp_path: Path, *overrides: str, epochs: int = 2):
    """The default experiment on a 300-row Adult file in the real format, its store, cache
    and data under ``tmp_path``: seconds through the whole pipeline."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"tracking.dir={tmp_path / 'mlruns'}",
                f"cache.dir={tmp_path / 'stages'}",
                f"dataset.data_dir={write_adult_files(tmp_path / 'adult', n_rows=300)}",
                "dataset.verify=false",
                f"trainer.max_epochs={epochs}",
                *overrides,
            ],
        )


def blob_part(rng: np.random.Generator, centers: np.ndarray, per_center: int) -> Part:
    """Points around each centre; label = centre index mod 2; annotation = centre index."""
    group = np.repeat(np.arange(len(centers)), per_center)
    x = centers[group] + 0.05 * rng.standard_normal((len(group), centers.shape[1]))
    annotations = pd.DataFrame(
        {"group": [f"g{g}" for g in group], "parity": [f"p{g % 2}" for g in group]}
    )
    return Part(x.astype(np.float32), (group % 2).astype(np.int64), annotations)


@pytest.fixture
def blob_splits() -> Splits:
    """Four well-separated blobs in 2-D; every split has 20 points per blob."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [5, 0], [0, 5], [5, 5]], dtype=np.float32)
    return Splits(*(blob_part(rng, centers, 20) for _ in range(3)), class_names=("a", "b"))


class FakeVictims(Victims):
    """Stands in for trained victims: even odds for every point, the input as every layer."""

    def __init__(self, n_victims: int) -> None:
        self.n_victims, self.device = n_victims, "fake"

    def __len__(self) -> int:
        return self.n_victims

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((self.n_victims, len(x), 2), 0.5)

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        return np.repeat(x.reshape(len(x), -1)[None], self.n_victims, axis=0)

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.zeros((2, 1)), np.zeros(2))] * self.n_victims


def recording_trainer(calls: list):
    """A `train_victims` stand-in that records ``(description, part, poison_sets)``."""

    def train(part: Part, poison_sets, description: str = "victims", keep=None) -> FakeVictims:
        calls.append((description, part, list(poison_sets)))
        return FakeVictims(len(poison_sets))

    return train


def train_heads(train: Part, poison_sets, *, model, trainer, seed: int, **fit):
    """Victims of the fixed-features regime without a backbone (heads on the input), as the
    MLP on Adult trains them."""
    from subpop_runner.training.base import Fit
    from subpop_runner.training.fixed_features import FixedFeatures

    return FixedFeatures(head=model).fit(train, poison_sets, Fit(trainer, seed, **fit))


def write_tiny_bert(folder: Path, vocab: list[str] | None = None, seed: int = 0) -> Path:
    """A randomly initialised 3-block BERT (hidden 16) and its WordPiece tokenizer, saved as
    ``from_pretrained`` reads them: what the BERT victims load, without a download."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = vocab or [f"w{i}" for i in range(40)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def one_torch_thread():
    """One torch thread while a test runs: tiny arithmetic gains nothing from a thread pool,
    and on a busy 2-core machine two threads made a 100-step fine-tune 13 s instead of 1."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The rule that keeps `make test` fast: a test that takes more than 5 s is marked `slow`.
# Every run lists the unmarked tests that broke it (timings move with the machine's load, so
# the list is a prompt to look, not a failure).
SLOW_SECONDS = 5.0
_unmarked_slow: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter) -> None:
    if _unmarked_slow:
        terminalreporter.write_sep("=", f"over {SLOW_SECONDS:g} s and not marked slow")
        for nodeid, seconds in sorted(_unmarked_slow, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs one worker per core), each worker takes its share
    of the cores for torch's intra-op threads: two workers with two threads each on two cores
    spend their time waiting for each other."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))
