from hydra.core.override_parser.overrides_parser import OverridesParser

from subpop_runner.sweep import in_effect, sweep_name


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
