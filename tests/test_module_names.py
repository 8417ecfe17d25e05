"""A fault or a toxic lives in a file named after it, so its name finds its code (a base class
shared by several lives in a file named for what it is, e.g. proxy_latency.py)."""

from __future__ import annotations

from cachestorm.chaos.faults import FAULTS, fault_class
from cachestorm.chaos.proxy.toxics import TOXIC_TYPES


def test_each_fault_lives_in_a_file_named_after_it():
    for name, spec in FAULTS.items():
        module = spec.split(":")[0].rsplit(".", 1)[1]
        assert module == name.replace("-", "_"), f"{name!r} lives in {module}.py"
        assert fault_class(name).name == name


def test_each_toxic_lives_in_a_file_named_after_it():
    for type_name, cls in TOXIC_TYPES.items():
        assert cls.__module__.rsplit(".", 1)[1] == type_name, f"{type_name!r} lives in {cls.__module__}"
