"""Key models: factories returning a callable that draws a key id, like Locust's ``between(a, b)``.

Every model draws ids in 1..keys and exposes ``pmf(id)``, its exact probability, so tests can
check samples against the distribution. Rank r of a skewed model is id r (design.md): the hot
keys are the small ids. Each model owns a ``random.Random(seed)``, so a fixed seed replays.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from cachestorm.core import plugins
from cachestorm.core.errors import CachestormError

MAX_KEYS = 50_000_000  # the exact Zipf table costs 8 bytes per key


def _check_keys(keys: int) -> int:
    if not isinstance(keys, int) or isinstance(keys, bool) or keys < 1:
        raise CachestormError(f"--keys must be a whole number >= 1 (got {keys!r}): the key space cannot be empty")
    if keys > MAX_KEYS:
        raise CachestormError(f"--keys {keys} is above the supported {MAX_KEYS}; use a smaller key space")
    return keys


def _check_share(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise CachestormError(f"{name} must be a fraction between 0 and 1 (got {value!r})")
    return float(value)


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or not math.isfinite(alpha) or alpha <= 0:
        raise CachestormError(f"--alpha must be a number > 0 (got {alpha!r}); Zipf with alpha <= 0 is not skewed")
    return float(alpha)


@lru_cache(maxsize=8)
def zipf_cdf(keys: int, alpha: float) -> array:
    """Exact cumulative probabilities of a bounded Zipf: cdf[r-1] = sum_{i<=r} i^-a / H(keys, a).

    Shared (cached) between all users of a process: it is read-only.
    """
    weights = array("d", (r ** -alpha for r in range(1, keys + 1)))
    total = math.fsum(weights)
    cdf = array("d", accumulate(w / total for w in weights))
    cdf[-1] = 1.0  # rounding must never leave a gap above the last key
    return cdf


@dataclass(frozen=True)
class KeyModelOptions:
    """The command line's key-model knobs; each model reads the ones it has."""

    alpha: float
    hot_fraction: float
    hot_op_fraction: float


class Zipf:
    """Bounded Zipf, sampled exactly: inverse CDF by bisection over the precomputed cumulative array."""

    def __init__(self, keys: int, alpha: float, seed: int | None = None):
        self.keys = _check_keys(keys)
        self.alpha = _check_alpha(alpha)
        self.cdf = zipf_cdf(self.keys, self.alpha)
        self.rng = random.Random(seed)

    @classmethod
    def from_options(cls, keys: int, options: KeyModelOptions, seed: int | None) -> Zipf:
        return cls(keys, options.alpha, seed)

    def __call__(self) -> int:
        return bisect_right(self.cdf, self.rng.random()) + 1

    def pmf(self, key: int) -> float:
        if not 1 <= key <= self.keys:
            return 0.0
        return self.cdf[key - 1] - (self.cdf[key - 2] if key > 1 else 0.0)


class Uniform:
    def __init__(self, keys: int, seed: int | None = None):
        self.keys = _check_keys(keys)
        self.rng = random.Random(seed)

    @classmethod
    def from_options(cls, keys: int, options: KeyModelOptions, seed: int | None) -> Uniform:
        return cls(keys, seed)

    def __call__(self) -> int:
        return self.rng.randint(1, self.keys)

    def pmf(self, key: int) -> float:
        return 1.0 / self.keys if 1 <= key <= self.keys else 0.0


class Hotspot:
    """YCSB hotspot: the first ``hot_fraction`` of ids get ``hot_op_fraction`` of operations, uniform within each set."""

    def __init__(self, keys: int, hot_fraction: float = 0.2, hot_op_fraction: float = 0.8, seed: int | None = None):
        self.keys = _check_keys(keys)
        _check_share("hotspot hot_fraction", hot_fraction)
        self.hot_op_fraction = _check_share("hotspot hot_op_fraction", hot_op_fraction)
        self.hot_keys = min(self.keys, max(1, round(self.keys * hot_fraction)))
        self.rng = random.Random(seed)

    @classmethod
    def from_options(cls, keys: int, options: KeyModelOptions, seed: int | None) -> Hotspot:
        return cls(keys, options.hot_fraction, options.hot_op_fraction, seed)

    def __call__(self) -> int:
        cold = self.keys - self.hot_keys
        if cold == 0 or self.rng.random() < self.hot_op_fraction:
            return self.rng.randint(1, self.hot_keys)
        return self.rng.randint(self.hot_keys + 1, self.keys)

    def pmf(self, key: int) -> float:
        if not 1 <= key <= self.keys:
            return 0.0
        cold = self.keys - self.hot_keys
        if cold == 0:
            return 1.0 / self.hot_keys
        if key <= self.hot_keys:
            return self.hot_op_fraction / self.hot_keys
        return (1.0 - self.hot_op_fraction) / cold


class Latest:
    """Recently written keys are hot (YCSB "latest"), over a fixed key space.

    Writes go to the next id in turn (``next_write_key``: 1, 2, ..., keys, 1, ...), like new posts;
    a read picks the key written ``rank - 1`` writes before the latest, rank drawn from an exact
    bounded Zipf. Before any write, the latest key is ``keys`` so reads start at the low ids
    wrapping around. Per process: each worker has its own notion of "latest".
    """

    def __init__(self, keys: int, alpha: float = 0.99, seed: int | None = None):
        self.keys = _check_keys(keys)
        self.zipf = Zipf(keys, alpha, seed)
        self.rng = self.zipf.rng
        self.latest = self.keys  # so the first written key is 1

    @classmethod
    def from_options(cls, keys: int, options: KeyModelOptions, seed: int | None) -> Latest:
        return cls(keys, options.alpha, seed)

    def next_write_key(self) -> int:
        self.latest = self.latest % self.keys + 1
        return self.latest

    def __call__(self) -> int:
        rank = self.zipf()
        return (self.latest - rank) % self.keys + 1

    def pmf(self, key: int) -> float:
        if not 1 <= key <= self.keys:
            return 0.0
        return self.zipf.pmf((self.latest - key) % self.keys + 1)


class Celebrity:
    """A celebrity key on top of any model: ``share`` of all draws go to one id (default 1)."""

    def __init__(self, base, share: float, key: int = 1, seed: int | None = None):
        self.base = base
        self.keys = base.keys
        self.share = _check_share("--celebrity-share", share)
        self.key = key
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        if self.rng.random() < self.share:
            return self.key
        return self.base()

    def pmf(self, key: int) -> float:
        return (self.share if key == self.key else 0.0) + (1.0 - self.share) * self.base.pmf(key)

    def next_write_key(self) -> int:
        return self.base.next_write_key() if hasattr(self.base, "next_write_key") else self()


class WithMissing:
    """``share`` of lookups are for keys that do not exist: ids keys+1..2*keys (exercises negative caching)."""

    def __init__(self, base, share: float, seed: int | None = None):
        self.base = base
        self.keys = base.keys
        self.share = _check_share("--missing-share", share)
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        if self.share and self.rng.random() < self.share:
            return self.rng.randint(self.keys + 1, 2 * self.keys)
        return self.base()

    def pmf(self, key: int) -> float:
        if key > self.keys:
            return self.share / self.keys if key <= 2 * self.keys else 0.0
        return (1.0 - self.share) * self.base.pmf(key)

    def next_write_key(self) -> int:
        return self.base.next_write_key() if hasattr(self.base, "next_write_key") else self.base()


# factories, in the style of locust's between(a, b)
def zipf(keys: int, alpha: float = 0.99, seed: int | None = None) -> Zipf:
    return Zipf(keys, alpha, seed)


def uniform(keys: int, seed: int | None = None) -> Uniform:
    return Uniform(keys, seed)


def hotspot(keys: int, hot_fraction: float = 0.2, hot_op_fraction: float = 0.8, seed: int | None = None) -> Hotspot:
    return Hotspot(keys, hot_fraction, hot_op_fraction, seed)


def latest(keys: int, alpha: float = 0.99, seed: int | None = None) -> Latest:
    return Latest(keys, alpha, seed)


def celebrity(base, share: float, key: int = 1, seed: int | None = None) -> Celebrity:
    return Celebrity(base, share, key, seed)


def with_missing(base, share: float, seed: int | None = None) -> WithMissing:
    return WithMissing(base, share, seed)


# name -> "module:Class"; a model is built by Class.from_options(keys, KeyModelOptions, seed) and draws
# with model() (a key id in 1..keys); pmf(id) and next_write_key() are optional
KEY_MODELS: dict[str, str] = plugins.registry("key-model", {
    "zipf": "cachestorm.traffic.models.keys:Zipf",
    "hotspot": "cachestorm.traffic.models.keys:Hotspot",
    "latest": "cachestorm.traffic.models.keys:Latest",
    "uniform": "cachestorm.traffic.models.keys:Uniform",
})


def build_key_model(
    name: str,
    keys: int,
    alpha: float = 0.99,
    celebrity_share: float = 0.0,
    missing_share: float = 0.0,
    hot_fraction: float = 0.2,
    hot_op_fraction: float = 0.8,
    seed: int | None = None,
):
    """The key model the command line asks for; sub-seeds derive from ``seed`` so each part replays."""

    def sub(n: int) -> int | None:
        return None if seed is None else seed * 7919 + n

    if name not in KEY_MODELS:
        raise CachestormError(f"--key-model {name!r} is unknown; choose one of {', '.join(KEY_MODELS)}")
    options = KeyModelOptions(alpha, hot_fraction, hot_op_fraction)
    model = plugins.load(KEY_MODELS[name], "key model").from_options(keys, options, sub(1))
    if celebrity_share:
        model = Celebrity(model, celebrity_share, 1, sub(2))
    if missing_share:
        model = WithMissing(model, missing_share, sub(3))
    return model


def write_key(model) -> int:
    """The key a write goes to: the model's own choice for "latest", else a normal draw."""
    next_write = getattr(model, "next_write_key", None)
    return next_write() if next_write is not None else model()
