"""Domain services, picked by --domain. Adding one = one file + one line in DOMAINS."""

from __future__ import annotations

from cachestorm.core import plugins

# name -> "module:Class"
DOMAINS: dict[str, str] = plugins.registry("domain", {
    "profiles": "cachestorm.targets.domains.profiles:Profiles",
    "catalog": "cachestorm.targets.domains.catalog:Catalog",
    "counters": "cachestorm.targets.domains.counters:Counters",
    "permissions": "cachestorm.targets.domains.permissions:Permissions",
})


def load_domain(name: str, service):
    return plugins.load(DOMAINS[name], "domain")(service)
