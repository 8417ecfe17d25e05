"""Domain services, picked by --domain. Adding one = its spec in cachestorm/core/domains.py, one file
here and one line in SERVICES (keyed by the spec's name)."""

from __future__ import annotations

from cachestorm.core import plugins
from cachestorm.core.domains import domain_spec

# spec name -> "module:Class"
SERVICES: dict[str, str] = plugins.registry("domain", {
    "profiles": "cachestorm.targets.domains.profiles:Profiles",
    "catalog": "cachestorm.targets.domains.catalog:Catalog",
    "counters": "cachestorm.targets.domains.counters:Counters",
    "permissions": "cachestorm.targets.domains.permissions:Permissions",
})


def load_domain(name: str, service):
    domain_spec(name)  # an unknown name: one line naming the known ones
    return plugins.load(SERVICES[name], "domain")(service)
