import functools

import pytest

from tubelet.registry import ConfigError, Registry, build, validate


class Thing:
    def __init__(self, size: int, *, depth: int = 2, transform=None) -> None:
        self.size, self.depth, self.transform = size, depth, transform


def make_registry() -> Registry:
    reg = Registry("widget")
    reg.add("thing", Thing)
    reg.add("thing_big", functools.partial(Thing, size=100))
    return reg


def test_build_passes_recipe_and_runtime_kwargs():
    obj = build({"type": "thing", "size": 3}, make_registry(), transform="T")
    assert (obj.size, obj.depth, obj.transform) == (3, 2, "T")


def test_partials_validate_against_their_remaining_signature():
    reg = make_registry()
    validate({"type": "thing_big", "depth": 4}, reg, key="model")  # size comes from the partial
    with pytest.raises(ConfigError, match=r"^model\.dpeth: unknown key; did you mean 'depth'\?$"):
        validate({"type": "thing_big", "dpeth": 4}, reg, key="model")


def test_unknown_type_missing_required_and_runtime_keys():
    reg = make_registry()
    with pytest.raises(ConfigError, match=r"^model\.type: unknown widget 'thin'; did you mean 'thing'\?$"):
        validate({"type": "thin"}, reg, key="model")
    with pytest.raises(ConfigError, match=r"^model\.size: required key is missing$"):
        validate({"type": "thing"}, reg, key="model")
    validate({"type": "thing", "size": 1}, reg, key="model", runtime=("transform",))


def test_closed_set_has_no_dotted_path_escape():
    with pytest.raises(ConfigError, match="unknown widget"):
        build({"type": "os.system"}, make_registry())
