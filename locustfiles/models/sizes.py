"""Value sizes (bytes): factories returning a callable, like locust's ``between(a, b)``."""

from __future__ import annotations

import random

from cachestorm.core.errors import CachestormError

# Atikoglu et al., SIGMETRICS 2012, Meta ETC pool, value size: generalized Pareto
# with location 0, scale 214.476, shape 0.348238 (mean ~329 B, median ~171 B, p99 ~2.4 KB).
META_ETC_SCALE = 214.476
META_ETC_SHAPE = 0.348238
MAX_VALUE_BYTES = 100_000  # cap the heavy tail so one draw cannot make a 1 GB body


class Fixed:
    def __init__(self, size: int):
        if size < 0:
            raise CachestormError(f"value size must be >= 0 bytes (got {size})")
        self.size = int(size)

    def __call__(self) -> int:
        return self.size


class GeneralizedPareto:
    """Inverse CDF: x = loc + scale/shape * ((1-u)^-shape - 1), capped at ``maximum``."""

    def __init__(self, scale: float, shape: float, loc: float = 0.0, maximum: int = MAX_VALUE_BYTES, seed: int | None = None):
        if scale <= 0:
            raise CachestormError(f"generalized Pareto scale must be > 0 (got {scale})")
        if shape == 0:
            raise CachestormError("generalized Pareto shape 0 is the exponential; give a non-zero shape")
        self.scale, self.shape, self.loc, self.maximum = scale, shape, loc, maximum
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        u = self.rng.random()
        x = self.loc + self.scale / self.shape * ((1.0 - u) ** -self.shape - 1.0)
        return max(1, min(self.maximum, int(x)))

    def quantile(self, q: float) -> float:
        return self.loc + self.scale / self.shape * ((1.0 - q) ** -self.shape - 1.0)


def fixed(size: int = 230) -> Fixed:
    return Fixed(size)


def generalized_pareto(scale: float, shape: float, loc: float = 0.0, seed: int | None = None) -> GeneralizedPareto:
    return GeneralizedPareto(scale, shape, loc, seed=seed)


def meta_etc(seed: int | None = None) -> GeneralizedPareto:
    return GeneralizedPareto(META_ETC_SCALE, META_ETC_SHAPE, 0.0, seed=seed)


def build_value_size(spec: str, seed: int | None = None):
    """``"230"`` or ``"fixed:230"`` -> fixed; ``"meta-etc"``; ``"gpareto:SCALE:SHAPE"``."""
    try:
        if spec == "meta-etc":
            return meta_etc(seed)
        if spec.startswith("gpareto:"):
            _, scale, shape = spec.split(":")
            return generalized_pareto(float(scale), float(shape), seed=seed)
        return fixed(int(spec.removeprefix("fixed:")))
    except ValueError:
        raise CachestormError(
            f"--value-size {spec!r} is not understood; use N, fixed:N, meta-etc or gpareto:SCALE:SHAPE"
        ) from None
