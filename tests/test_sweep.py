from hydra.core.override_parser.overrides_parser import OverridesParser

from subpop_runner.sweep import defer_keys, in_effect, sweep_name
from subpop_runner.tracking import sweep_experiment


def parse(*overrides: str) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


def test_parent_run_is_named_by_the_axes_in_effect_once_each():
    # A sweep file's axes come first, the command line's after: the last word on a key wins,
    # as it does for the jobs the basic sweeper makes.
    parsed = parse("attack.alpha=0.5,1,2", "seed=0,1,2", "seed=3,4", "attack.alpha=2")
    assert sweep_name("adult_defenses", parsed) == "adult_defenses: seed=3,4"
    assert [o.get_key_element() for o in in_effect(parsed)] == ["attack.alpha", "seed"]


def test_parent_run_without_axes_is_named_by_its_config():
    assert sweep_name("config", parse("seed=1", "attack.alpha=2")) == "config"


def test_a_multiruns_fixed_keys_can_be_taken_out_of_its_shared_config():
    """Only dotted keys set to one value: groups, axes and Hydra's own settings stay."""
    argv = ["-m", "--config-name", "x", "defense=trim,sever", "defense.rounds=3", "seed=1"]
    argv += ["attack.alpha=1,2", "+model.dropout=0.5", "hydra.sweeper.resume=false"]
    kept, deferred = defer_keys(argv)
    assert deferred == ["defense.rounds=3", "+model.dropout=0.5"]
    assert kept == ["-m", "--config-name", "x", "defense=trim,sever", "seed=1"] + [
        "attack.alpha=1,2",
        "hydra.sweeper.resume=false",
    ]


def test_a_sweeps_experiment_is_its_jobs_own_its_files_name_or_the_words_they_share():
    assert sweep_experiment(["adult_cm", "adult_cm"], "adult_table5") == "adult_cm"
    by_defense = ["adult_cluster_match_trim", "adult_cluster_match_sever"]
    assert sweep_experiment(by_defense, "adult_defenses") == "adult_defenses"
    smoke = ["adult_cluster_match_trim_smoke", "adult_cluster_match_sever_smoke"]
    assert sweep_experiment(smoke, "adult_defenses") == "adult_defenses_smoke"
    # from the command line alone (Hydra's config name `config`): the words they share, not
    # a prefix of letters ("…_sever" and "…_spectral_signatures" share an "s")
    by_defense = ["adult_cluster_match", "adult_cluster_match_trim", "adult_cluster_match_sever"]
    assert sweep_experiment(by_defense, "config") == "adult_cluster_match"
    assert sweep_experiment(["a_b_sever", "a_b_spectral_signatures"], "config") == "a_b"
    assert sweep_experiment(["a_b_smoke", "a_b_trim_smoke"], "config") == "a_b_smoke"
    assert sweep_experiment(["adult", "imdb"], "config") == "adult"
