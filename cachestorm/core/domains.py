"""The domains: one spec each, read by the targets (tables, routes, Redis keys, defaults), the traffic
(paths, operation mix), chaos (which Redis keys a fault touches), the conductor (the truth) and the
reports (known names). Adding a domain = one entry in DOMAINS, its service in targets/domains/
(plus its line there) and its locustfile in locustfiles/<name>.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.core.errors import CachestormError

KEY_FORMAT = "{prefix}:{id}"   # a row's Redis key; "*" for the id: the pattern of all of them


@dataclass(frozen=True)
class DomainSpec:
    name: str              # --domain, the locustfile's file name, the truth's item names (<name>:<id>)
    table: str             # PostgreSQL table (id, version, data) seeded with ids 1..--rows
    key_prefix: str        # one row's Redis key is <key_prefix>:<id>
    resource: str          # one row's URL is /<resource>/<id>
    default_strategy: str  # what `--strategy default` means
    default_ttl_s: float
    seed_sql: str          # SQL for the data of row g
    write_ratio: float     # the traffic's default share of writes
    has_delete: bool       # the traffic has a delete operation
    prefillable: bool = True     # one cache entry per row at its key: the warm-up can prefill it
    per_field: bool = False      # each key of a row's data is an item of its own (<name>:<id>:<field>)
    counter: bool = False        # rows count (data.count): writes are increments, the truth records counts
    owner_is_key: bool = False   # row id = the user who owns it: writes are the owner's (read-your-writes)

    def key(self, key_id: int | str) -> str:
        return KEY_FORMAT.format(prefix=self.key_prefix, id=key_id)

    def path(self, key_id: int | str) -> str:
        return f"/{self.resource}/{key_id}"

    @property
    def route(self) -> str:
        """The path of one row as a Starlette route."""
        return f"/{self.resource}/{{id:int}}"

    @property
    def request_name(self) -> str:
        """The path as Locust's statistics name it (ids folded into one entry)."""
        return f"/{self.resource}/[id]"

    @property
    def warm_sql(self) -> str:
        """Rows with ids in [%s, %s], for the warm-up's bulk prefill (one range at a time)."""
        return f"SELECT id, version, data FROM {self.table} WHERE id BETWEEN %s AND %s"

    @property
    def truth_sql(self) -> str:
        """Every row's id, version and, per_field, its data or, counter, its count: the checker's truth."""
        extra = ", data" if self.per_field else ", COALESCE((data->>'count')::bigint, 0)" if self.counter else ""
        return f"SELECT id, version{extra} FROM {self.table}"


DOMAINS: dict[str, DomainSpec] = {spec.name: spec for spec in (
    # read-mostly; the owner reads their own writes past the cache
    DomainSpec("profiles", table="profiles", key_prefix="profiles", resource="profiles",
               default_strategy="read-through", default_ttl_s=30.0,
               seed_sql="jsonb_build_object('name', 'user-' || g, 'bio', repeat('x', 64))",
               write_ratio=0.1, has_delete=True, owner_is_key=True),
    # products: rarely written, served stale while one refresh runs
    DomainSpec("catalog", table="products", key_prefix="catalog", resource="products",
               default_strategy="stale-while-revalidate", default_ttl_s=300.0,
               seed_sql="jsonb_build_object('name', 'product-' || g, 'price_cents', 100 + mod(g, 9900))",
               write_ratio=0.02, has_delete=True),
    # increments, acknowledged after Redis and flushed in batches
    DomainSpec("counters", table="counters", key_prefix="counters", resource="counters",
               default_strategy="write-behind", default_ttl_s=30.0, seed_sql="jsonb_build_object('count', 0)",
               write_ratio=0.5, has_delete=False, counter=True),
    # a revoke must stop being granted within a bound; entries are per user, items per permission
    DomainSpec("permissions", table="permissions", key_prefix="permissions", resource="permissions",
               default_strategy="read-through", default_ttl_s=5.0,
               seed_sql="jsonb_build_object('read', true, 'write', mod(g, 2) = 0, 'admin', false)",
               write_ratio=0.05, has_delete=True, prefillable=False, per_field=True),
)}


def domain_spec(name: str, flag: str = "--domain") -> DomainSpec:
    """The spec of a domain; an unknown name is a usage error (one line)."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise CachestormError(f"{flag} {name!r} is unknown; choose one of {', '.join(DOMAINS)}") from None


def redis_key(name: str, key_id: int | str) -> str:
    """The Redis key of row `key_id` of domain `name`; any other name is a key prefix of your own (as
    chaos' --chaos-domain and a fault's `domain:` allow)."""
    spec = DOMAINS.get(name)
    return spec.key(key_id) if spec else KEY_FORMAT.format(prefix=name, id=key_id)
