"""Catalog traffic: GET/PUT/DELETE /products/{id}. Options: docs/design.md "Locust command line"."""

from cachestorm.traffic.common import CachestormShape, CachestormUser, Process

Process.domain = "catalog"
__all__ = ["CatalogUser", "CachestormShape"]


class CatalogUser(CachestormUser):
    def perform(self, op, key, intended_ns):
        path = f"/products/{key}"
        if op == "read":
            return self.call("read", key, "GET", path, "/products/[id]", intended_ns)
        if op == "write":
            return self.call("write", key, "PUT", path, "/products/[id]", intended_ns,
                             body={"data": {"title": f"product {key}", "description": self.value_body()}})
        if op == "delete":
            return self.call("delete", key, "DELETE", path, "/products/[id]", intended_ns)
        raise ValueError(f"catalog has no operation {op!r}")
