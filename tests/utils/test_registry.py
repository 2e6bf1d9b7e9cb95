import pytest

from mfray.utils.registry import Registry, RegistryError


def test_register_build_and_resolve_instances():
    reg: Registry = Registry("widget")

    @reg.register("Box")
    class Box:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert "box" in reg and reg.names() == ["box"]
    assert reg.build("box", size=3).size == 3
    b = Box()
    assert reg.build(b) is b


def test_duplicate_names_are_refused():
    reg: Registry = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_and_kwargs_are_errors_that_list_choices():
    reg: Registry = Registry("readout")
    reg.register("sum")(lambda dim=1: dim)
    reg.register("mean")(lambda dim=1: dim)
    with pytest.raises(RegistryError, match=r"among choices \['mean', 'sum'\].*did you mean 'sum'"):
        reg.get("summ")
    with pytest.raises(RegistryError, match=r"unknown argument\(s\) \['dimm'\].*accepted: \['dim'\]"):
        reg.build("sum", dimm=3)
