"""Load shapes as pure functions of elapsed time.

A shape gives a *level*: a fraction of the base load. The base is the user count (``-u``) in
the closed model and ``--rate`` (requests/s) in the open model, so ``--rate 800 --shape step``
steps the arrival rate up to 800/s and ``-u 50 --shape step`` steps users up to 50.
``level(t)`` returns None when the shape is over (the test then stops).

Shapes (``--shape NAME --shape-args k=v,k=v``; durations in seconds):
- steady  ``duration`` (0 = until -t)                                  level 1
- ramp    ``start=0.1,end=1,duration=60`` then hold end until -t if ``hold=1``
- step    ``steps=5,hold=20,start=0.2``: levels start..1 in equal steps, each held ``hold`` s
- spike   ``base=0.2,peak=1,at=30,length=10,duration=60`` (flash crowd)
- diurnal ``low=0.2,high=1,period=120,duration=0``: sinusoid, low at t=0
- a file (``--shape path.json|.yaml``): ``{"stages": [{"duration": s, "level": f}, ...]}``
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cachestorm.core.errors import CachestormError


class Shape:
    name = "shape"

    def level(self, t: float) -> float | None:  # pragma: no cover - interface
        raise NotImplementedError

    def peak(self) -> float:
        return 1.0


class Steady(Shape):
    name = "steady"

    def __init__(self, duration: float = 0.0):
        self.duration = duration

    def level(self, t):
        if self.duration and t >= self.duration:
            return None
        return 1.0


class Ramp(Shape):
    name = "ramp"

    def __init__(self, start: float = 0.1, end: float = 1.0, duration: float = 60.0, hold: float = 0.0):
        if duration <= 0:
            raise CachestormError(f"--shape-args ramp duration must be > 0 (got {duration})")
        self.start, self.end, self.duration, self.hold = start, end, duration, hold

    def level(self, t):
        if t >= self.duration:
            return self.end if self.hold else None
        return self.start + (self.end - self.start) * t / self.duration

    def peak(self):
        return max(self.start, self.end)


class Step(Shape):
    """Capacity search: hold each step, then move on; over after the last step."""

    name = "step"

    def __init__(self, steps: int = 5, hold: float = 20.0, start: float = 0.0):
        if not 1 <= int(steps) <= 1000 or hold <= 0:
            raise CachestormError(f"--shape-args step needs 1 <= steps <= 1000 and hold > 0 (got steps={steps:g}, hold={hold:g})")
        self.steps, self.hold = int(steps), float(hold)
        self.start = start if start else 1.0 / self.steps

    def level(self, t):
        index = int(t // self.hold)
        if index >= self.steps:
            return None
        if self.steps == 1:
            return 1.0
        return self.start + (1.0 - self.start) * index / (self.steps - 1)

    def levels(self) -> list[float]:
        """The level of each step, in order."""
        return [self.level(index * self.hold) for index in range(self.steps)]


class Spike(Shape):
    name = "spike"

    def __init__(self, base: float = 0.2, peak: float = 1.0, at: float = 30.0, length: float = 10.0, duration: float = 60.0):
        self.base, self.peak_level, self.at, self.length, self.duration = base, peak, at, length, duration

    def level(self, t):
        if self.duration and t >= self.duration:
            return None
        return self.peak_level if self.at <= t < self.at + self.length else self.base

    def peak(self):
        return max(self.base, self.peak_level)


class Diurnal(Shape):
    name = "diurnal"

    def __init__(self, low: float = 0.2, high: float = 1.0, period: float = 120.0, duration: float = 0.0):
        if period <= 0:
            raise CachestormError(f"--shape-args diurnal period must be > 0 (got {period})")
        self.low, self.high, self.period, self.duration = low, high, period, duration

    def level(self, t):
        if self.duration and t >= self.duration:
            return None
        return self.low + (self.high - self.low) * (1 - math.cos(2 * math.pi * t / self.period)) / 2

    def peak(self):
        return max(self.low, self.high)


class Stages(Shape):
    name = "stages"

    def __init__(self, stages: list[tuple[float, float]]):
        self.stages = stages

    def level(self, t):
        end = 0.0
        for duration, level in self.stages:
            end += duration
            if t < end:
                return level
        return None

    def peak(self):
        return max(level for _, level in self.stages)


SHAPES = {cls.name: cls for cls in (Steady, Ramp, Step, Spike, Diurnal)}


def parse_shape_args(text: str | None) -> dict[str, float]:
    args: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            args[name.strip()] = float(value)
            if not math.isfinite(args[name.strip()]):  # a NaN passes every range check
                raise ValueError
        except ValueError:
            raise CachestormError(f"--shape-args {text!r}: {part!r} is not name=number (e.g. steps=5,hold=20)") from None
    return args


def load_shape_file(path: Path) -> Stages:
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            from cachestorm.core.yamlload import safe_load_unique

            data = safe_load_unique(text)  # a key written twice is an error
        else:
            data = json.loads(text)
        stages = [(float(s["duration"]), float(s["level"])) for s in data["stages"]]
        if not stages or any(not (0 < d < math.inf and 0 <= lv < math.inf) for d, lv in stages):
            raise ValueError("each stage needs a finite duration > 0 and a finite level >= 0")
    except Exception as exc:  # noqa: BLE001 - any defect in the file is the user's to fix
        raise CachestormError(
            f"--shape file {path} is malformed ({type(exc).__name__}: {exc}); "
            'expected {"stages": [{"duration": seconds, "level": fraction}, ...]}'
        ) from None
    return Stages(stages)


def build_shape(name: str | None, args: str | None = None) -> Shape:
    """``--shape`` / ``--shape-args``; None or "" means steady until -t."""
    if not name:
        return Steady()
    if name in SHAPES:
        kwargs = parse_shape_args(args)
        try:
            shape = SHAPES[name](**kwargs)
        except TypeError:
            raise CachestormError(f"--shape-args {args!r} does not fit shape {name!r}; see locustfiles/models/shapes.py") from None
        levels = [v for k, v in kwargs.items() if k in ("start", "end", "base", "peak", "low", "high")]
        if any(v < 0 for v in levels):
            raise CachestormError(f"--shape-args {args!r}: levels must be >= 0")
        return shape
    path = Path(name)
    if path.suffix in (".json", ".yaml", ".yml"):
        try:
            exists = path.is_file()
        except OSError as exc:  # e.g. a name longer than the file system takes
            raise CachestormError(f"--shape file {name[:60]}: cannot use it ({exc.strerror})") from None
        if not exists:
            raise CachestormError(f"--shape file {name} does not exist (or is not a file)")
        return load_shape_file(path)
    raise CachestormError(f"--shape {name!r} is unknown; choose one of {', '.join(SHAPES)} or give a .json/.yaml stages file")
