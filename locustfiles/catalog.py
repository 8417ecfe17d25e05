"""Catalog traffic: GET/PUT/DELETE /products/{id}. Options: docs/design.md "Locust command line"."""

from cachestorm.traffic.common import CachestormShape, CachestormUser, Process

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["catalog"]
Process.domain = SPEC.name
__all__ = ["CatalogUser", "CachestormShape"]


class CatalogUser(CachestormUser):
    def perform(self, op, key, intended_ns):
        path, name = SPEC.path(key), SPEC.request_name
        if op == "read":
            return self.call("read", key, "GET", path, name, intended_ns)
        if op == "write":
            return self.call("write", key, "PUT", path, name, intended_ns,
                             body={"data": {"title": f"product {key}", "description": self.value_body()}})
        if op == "delete":
            return self.call("delete", key, "DELETE", path, name, intended_ns)
        raise ValueError(f"catalog has no operation {op!r}")
