"""The load shapes as ready-made Locust LoadTestShape classes, for your own locustfiles.

Import one into a locustfile (Locust uses the shape class it finds there) and subclass it to set
``users`` (the peak) and the model's parameters; levels are fractions of ``users``:

    from cachestorm.traffic.shapes import StepShape
    from cachestorm.traffic.models.shapes import Step

    class Capacity(StepShape):
        users = 200
        model = Step(steps=5, hold=30)

The domain locustfiles use ``locustfiles.common.CachestormShape`` instead, which picks the shape
by name from ``--shape``/``--shape-args`` and also drives the open model's rate.
"""

from __future__ import annotations

from cachestorm.traffic.models.shapes import Diurnal, Ramp, Shape, Spike, Steady, Step
from locust import LoadTestShape


class ModelShape(LoadTestShape):
    abstract = True
    model: Shape = Steady(duration=60)
    users = 10
    spawn_rate: float | None = None  # None: reach each level within a second

    def tick(self):
        level = self.model.level(self.get_run_time())
        if level is None:
            return None
        users = max(0, round(level * self.users))
        return users, float(self.spawn_rate or max(users, 1))


class SteadyShape(ModelShape):
    abstract = True
    model = Steady(duration=60)


class RampShape(ModelShape):
    abstract = True
    model = Ramp(start=0.1, end=1.0, duration=60)


class StepShape(ModelShape):
    abstract = True
    model = Step(steps=5, hold=20)


class SpikeShape(ModelShape):
    abstract = True
    model = Spike(base=0.2, peak=1.0, at=30, length=10, duration=60)


class DiurnalShape(ModelShape):
    abstract = True
    model = Diurnal(low=0.2, high=1.0, period=120, duration=240)
