"""Traffic settings from the Locust command line, validated (pure: no locust import).

``ARGUMENTS`` is the one list of custom options; ``locustfiles.common`` registers them with
Locust and ``build_settings`` turns the parsed namespace into models, raising CachestormError
(one line naming the option) on bad input. A run hands its options here by name: ``check_options``
validates them before anything starts and ``traffic_argv`` renders them for Locust's command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from cachestorm.traffic.models import keys as key_models
from cachestorm.traffic.models.ops import Mix, domain_mix
from cachestorm.traffic.models.presets import get_preset
from cachestorm.traffic.models.retry import build_retry
from cachestorm.traffic.models.shapes import Shape, build_shape
from cachestorm.traffic.models.sizes import build_value_size

from cachestorm.core.defaults import DEFAULTS, LIMITS
from cachestorm.core.errors import CachestormError

# (flag, type, default, help). None defaults mean "from --preset, else the domain default".
ARGUMENTS: list[tuple[str, type, Any, str]] = [
    ("--run-dir", str, "", "run folder to record histories/ and latency/ into (empty: no files, summary only)"),
    ("--hosts", str, "", "several target instances, comma-separated base URLs: requests go round-robin (default --host)"),
    ("--preset", str, "", "ycsb-a..ycsb-f, twitter-median, meta-etc (sets key model, alpha, mix, value size)"),
    ("--key-model", str, None, f"{' | '.join(key_models.KEY_MODELS)} (default {DEFAULTS.key_model})"),
    ("--alpha", float, None, f"Zipf exponent for zipf/latest, > 0 (default {DEFAULTS.alpha:g})"),
    ("--keys", int, DEFAULTS.keys, "key space: ids 1..N"),
    ("--hot-keys", int, DEFAULTS.hot_keys, "ids 1..K are the hot keys (always in the histories)"),
    ("--hot-fraction", float, DEFAULTS.hot_fraction, "hotspot: fraction of keys that are hot"),
    ("--hot-op-fraction", float, DEFAULTS.hot_op_fraction, "hotspot: fraction of operations on the hot keys"),
    ("--celebrity-share", float, DEFAULTS.celebrity_share, "fraction of all operations on key 1, on top of the key model"),
    ("--missing-share", float, DEFAULTS.missing_share, "fraction of reads for ids N+1..2N that do not exist"),
    ("--write-ratio", float, None, "fraction of writes (default: preset, else the domain default)"),
    ("--delete-ratio", float, DEFAULTS.delete_ratio, "fraction of deletes (profiles, catalog, permissions=revoke)"),
    ("--owner-read-share", float, DEFAULTS.owner_read_share, "profiles: fraction of reads sent by the owner (X-User-Id, bypasses cache)"),
    ("--value-size", str, None, f"N | fixed:N | meta-etc | gpareto:SCALE:SHAPE (bytes; default {DEFAULTS.value_size})"),
    ("--rate", float, 0.0, "open model: arrivals per second over all processes (0 = closed model)"),
    ("--arrivals", str, DEFAULTS.arrivals, "open model schedule: constant | poisson"),
    ("--max-inflight", int, DEFAULTS.max_inflight, "open model: in-flight bound per process; arrivals beyond it are dropped and counted"),
    ("--open-users", int, 0, "open model: scheduler users sharing --rate (0 = -u, at least 1; use one per worker)"),
    ("--late-ms", float, DEFAULTS.late_ms, "open model: a send later than this after its intended time counts as late"),
    ("--shape", str, "", "steady | ramp | step | spike | diurnal | stages file .json/.yaml (default steady until -t)"),
    ("--shape-args", str, "", "shape parameters k=v,k=v (levels are fractions of -u or --rate)"),
    ("--retry", str, DEFAULTS.retry, "none | naive:N | backoff:N | budget:R"),
    ("--history-sample", float, DEFAULTS.history_sample, "fraction of key ids whose operations are recorded (plus the hot keys)"),
    ("--seed", int, DEFAULTS.locust_seed, "random seed (-1: random)"),
    ("--request-timeout", float, DEFAULTS.locust_request_timeout_s, "seconds before a request counts as a timeout"),
    ("--think-time", str, DEFAULTS.think_time, "closed model wait between operations: S or A,B seconds"),
]


def option_name(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def traffic_argv(options: dict[str, Any]) -> list[str]:
    """These options (by name, e.g. key_model) as the Locust command line's flag/value pairs."""
    flags = {option_name(flag): flag for flag, *_ in ARGUMENTS}
    _refuse_unknown(options, flags)
    return [part for name, value in options.items() for part in (flags[name], str(value))]


def check_options(options: dict[str, Any], domain: str) -> Settings:
    """The settings these options (by name; the rest at their defaults) give, validated as Locust will."""
    _refuse_unknown(options, {option_name(flag) for flag, *_ in ARGUMENTS})
    return build_settings(SimpleNamespace(**options), domain)


def _refuse_unknown(options: dict[str, Any], known) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise CachestormError(f"unknown traffic option {unknown[0]!r}; known: {', '.join(sorted(known))}")


@dataclass
class Settings:
    domain: str
    run_dir: str
    keys: int
    hot_keys: int
    key_model: Any
    mix: Mix
    value_size: Any
    retry: Any
    shape: Shape
    rate: float
    arrivals: str
    max_inflight: int
    open_users: int
    late_ns: int
    history_sample: float
    seed: int | None
    request_timeout: float
    think_time: tuple[float, float]
    owner_read_share: float
    run_time_s: float | None = None   # Locust's -t: the open-model schedule ends there, not after --stop-timeout
    hosts: tuple[str, ...] = ()
    preset: str = ""
    description: dict = field(default_factory=dict)

    @property
    def open_model(self) -> bool:
        return self.rate > 0


def _get(options, flag: str):
    """The option's value as its declared type. Locust's web UI hands options whose default is None
    back as text ("1.21", or "" for a field left empty): converted here, the one place for it."""
    name = option_name(flag)
    kind, default = next((k, d) for f, k, d, _ in ARGUMENTS if f == flag)
    value = getattr(options, name, default)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            value = kind(text) if text else None
        except ValueError:
            raise CachestormError(f"{flag} must be {'an integer' if kind is int else 'a number'} "
                                  f"(got {value!r})") from None
    return default if value is None and default is not None else value


def _fraction(flag: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise CachestormError(f"{flag} must be between 0 and 1 (got {value})")
    return value


def build_settings(options, domain: str, salt: int = 0) -> Settings:
    """Validated settings; ``salt`` (the worker index) varies the seed so workers draw different keys."""
    for flag, kind, _, _ in ARGUMENTS:  # a NaN passes every range check below
        value = _get(options, flag) if kind is float else None
        if value is not None and not math.isfinite(value):
            raise CachestormError(f"{flag} must be a finite number (got {value})")
    preset_name = _get(options, "--preset") or ""
    preset = get_preset(preset_name) if preset_name else None
    seed = _get(options, "--seed")
    seed = None if seed is None or seed < 0 else seed + 1_000_003 * salt
    keys = _get(options, "--keys")
    hot_keys = _get(options, "--hot-keys")
    if keys < 1:
        raise CachestormError(f"--keys must be >= 1 (got {keys})")
    if not 0 <= hot_keys <= keys:
        raise CachestormError(f"--hot-keys must be between 0 and --keys ({keys}) (got {hot_keys})")
    key_model_name = _get(options, "--key-model") or (preset.key_model if preset else DEFAULTS.key_model)
    alpha = _get(options, "--alpha")
    alpha = alpha if alpha is not None else (preset.alpha if preset else DEFAULTS.alpha)
    key_model = key_models.build_key_model(
        key_model_name, keys, alpha,
        celebrity_share=_get(options, "--celebrity-share"),
        missing_share=_get(options, "--missing-share"),
        hot_fraction=_fraction("--hot-fraction", _get(options, "--hot-fraction")),
        hot_op_fraction=_fraction("--hot-op-fraction", _get(options, "--hot-op-fraction")),
        seed=seed,
    )
    write_ratio = _get(options, "--write-ratio")
    delete_ratio = _get(options, "--delete-ratio")
    mix_seed = None if seed is None else seed + 11
    if preset and write_ratio is None and not delete_ratio:
        mix = Mix(dict(preset.mix), mix_seed)
    else:
        mix = domain_mix(domain, write_ratio, delete_ratio, mix_seed)
    value_size = build_value_size(_get(options, "--value-size") or (preset.value_size if preset else DEFAULTS.value_size),
                                  None if seed is None else seed + 13)
    rate = _get(options, "--rate")
    if not math.isfinite(rate) or rate < 0:
        raise CachestormError(f"--rate must be a finite number >= 0 requests/s (got {rate}); 0 means the closed model")
    if rate > LIMITS.max_rate:  # beyond it the schedule falls behind and never yields: Locust does not stop
        raise CachestormError(f"--rate {rate:g}/s is more than one Locust process schedules on time "
                              f"(at most {LIMITS.max_rate:,.0f} arrivals/s)")
    arrivals = _get(options, "--arrivals")
    if arrivals not in ("constant", "poisson"):
        raise CachestormError(f"--arrivals {arrivals!r} is unknown; use constant or poisson")
    max_inflight = _get(options, "--max-inflight")
    if max_inflight < 1:
        raise CachestormError(f"--max-inflight must be >= 1 (got {max_inflight})")
    open_users = _get(options, "--open-users")
    if open_users <= 0:
        open_users = max(1, getattr(options, "num_users", None) or 1)
    shape = build_shape(_get(options, "--shape"), _get(options, "--shape-args"))
    timeout = _get(options, "--request-timeout")
    if timeout <= 0:
        raise CachestormError(f"--request-timeout must be > 0 seconds (got {timeout})")
    think = _get(options, "--think-time")
    try:
        parts = [float(p) for p in str(think).split(",")]
        low, high = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if len(parts) > 2 or low < 0 or high < low:
            raise ValueError
    except ValueError:
        raise CachestormError(f"--think-time {think!r}: give S or A,B seconds with 0 <= A <= B") from None
    return Settings(
        domain=domain,
        run_dir=_get(options, "--run-dir") or "",
        keys=keys,
        hot_keys=hot_keys,
        key_model=key_model,
        mix=mix,
        value_size=value_size,
        retry=build_retry(_get(options, "--retry"), None if seed is None else seed + 17),
        shape=shape,
        rate=rate,
        arrivals=arrivals,
        max_inflight=max_inflight,
        open_users=open_users,
        late_ns=int(_get(options, "--late-ms") * 1e6),
        history_sample=_fraction("--history-sample", _get(options, "--history-sample")),
        seed=seed,
        request_timeout=timeout,
        think_time=(low, high),
        owner_read_share=_fraction("--owner-read-share", _get(options, "--owner-read-share")),
        run_time_s=getattr(options, "run_time", None) or None,
        hosts=_hosts(_get(options, "--hosts")),
        preset=preset_name,
        description={"key_model": key_model_name, "alpha": alpha, "mix": mix.probabilities},
    )


def _hosts(text: str | None) -> tuple[str, ...]:
    hosts = tuple(h.strip().rstrip("/") for h in (text or "").split(",") if h.strip())
    for host in hosts:
        if not host.startswith(("http://", "https://")):
            raise CachestormError(f"--hosts: {host!r} is not a base URL like http://127.0.0.1:8001")
    return hosts
