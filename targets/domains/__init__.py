"""Domain services, picked by --domain. Adding one = one file + one line in DOMAINS."""

from __future__ import annotations

import importlib

# name -> "module:Class"
DOMAINS: dict[str, str] = {
    "profiles": "cachestorm.targets.domains.profiles:Profiles",
    "catalog": "cachestorm.targets.domains.catalog:Catalog",
    "counters": "cachestorm.targets.domains.counters:Counters",
    "permissions": "cachestorm.targets.domains.permissions:Permissions",
}


def load_domain(name: str, service):
    module_name, attribute = DOMAINS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)(service)
