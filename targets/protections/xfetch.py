"""xfetch: probabilistic early expiration (Vattani et al., VLDB 2015). A hit recomputes early when
now - delta*beta*ln(rand()) >= expiry, delta being the measured recompute time stored with the
value. About one reader refreshes shortly before expiry; everyone else keeps hitting."""

from __future__ import annotations

import math
import random

from cachestorm.targets.protections.base import Protection


class XFetch(Protection):
    name = "xfetch"

    def refresh_early(self, entry, now: float) -> bool:
        if entry.expires_at == 0 or entry.delta <= 0:
            return False
        u = 1.0 - random.random()  # in (0, 1]: ln(0) would be -inf
        return now - entry.delta * self.settings.xfetch_beta * math.log(u) >= entry.expires_at
