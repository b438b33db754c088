"""The registry names a registered method class: its name is written once, in `register`."""
from __future__ import annotations

import pytest

import wsbench.builtins  # noqa: F401
from wsbench.methods.base import Encoder, Method
from wsbench.registry import METHODS, Registry


def test_every_registered_method_carries_its_registry_name():
    for name in METHODS.names():
        assert METHODS.get(name).name == name


def test_register_names_the_class_and_a_subclass_gets_its_own_name():
    reg: Registry = Registry("method")

    @reg.register("base_method")
    class Base(Method):
        pass

    @reg.register("derived_method")
    class Derived(Base):
        pass

    assert Base.name == "base_method" and Derived.name == "derived_method"


def test_a_class_named_otherwise_than_its_registration_is_refused():
    reg: Registry = Registry("method")

    class Named(Encoder):
        name = "one_name"

    with pytest.raises(ValueError, match="named 'one_name' but registered as 'another'"):
        reg.register("another")(Named)


def test_the_encoder_contract_has_defaults_for_every_hook():
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.capability != "encoder":
            continue
        assert isinstance(cls.tiny_config, dict) and isinstance(cls.intended_invariances, frozenset)
        assert callable(cls.augment) and callable(cls.auxiliary_loss)
