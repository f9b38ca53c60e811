import pytest

from servesim.workloads import ModelSpec


def test_stage_order_comes_from_the_profile(make_profile):
    profile = make_profile({"encode": [(1, 1, 1, 1)], "attend": [(1, 1, 1, 1)], "decode": [(1, 1, 1, 1)]})
    assert ModelSpec.from_profile(profile, "m") == ModelSpec("m", ("encode", "attend", "decode"))


def test_stages_become_a_tuple():
    assert ModelSpec("m", ["only"]).stages == ("only",)


@pytest.mark.parametrize(
    "name, stages, message",
    [
        ("m", (), "needs at least one stage"),
        ("m", ("a", "b", "a"), r"stage name\(s\) \['a'\] appear more than once"),
        ("m", ("a", ""), "stage names must be non-empty strings"),
        ("", ("a",), "model name must be a non-empty string"),
    ],
)
def test_invalid_specs(name, stages, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(name, stages)
