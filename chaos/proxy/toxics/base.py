"""What every toxic shares: attribute parsing (Go-JSON-like), its JSON form, per-link hooks.

A toxic instance is the configuration (one per proxy). Its effect on one direction of one
connection lives in a per-link `state` object made by `new_state()`. The direction calls:
- `attach(link, state)` when the toxic starts applying to the link (timers start here),
- `await process(link, state, data, emit)` for each chunk; call `await emit(data)` to pass data on
  (zero, one or several times); `process_now(link, state, data)` may first take it with a plain
  call when nothing has to wait (latency already due, noop),
- `await on_eof(link, state)` before the link closes,
- `detach(link, state)` when the toxic is removed while the link lives.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from cachestorm.chaos.proxy import gojson
from cachestorm.chaos.proxy.errors import BAD_REQUEST_BODY

Emit = Callable[[bytes], Awaitable[None]]
NOT_NOW = object()  # process_now's answer when the chunk must go through `process` (it may wait)

# Go type names used in Toxiproxy's json decoding errors
_GO_TYPE = {int: "int64", float: "float64", list: "[]string", str: "string"}


class Toxic:
    type_name: ClassVar[str] = ""
    go_struct: ClassVar[str] = ""  # for error messages in Toxiproxy's words
    # attribute name -> (python type, default)
    fields: ClassVar[dict[str, tuple[type, Any]]] = {}
    # extras on every toxic: cachestorm's self-removal after `duration` ms (0 = never)
    common_fields: ClassVar[dict[str, tuple[type, Any]]] = {"duration": (int, 0)}
    # whether this toxic needs a live pipeline on the link (False: only connect-time effects)
    affects_data: ClassVar[bool] = True
    # a toxic that only makes sense on one stream (redis_write_fail reads commands: upstream)
    fixed_stream: ClassVar[str | None] = None

    def __init__(self, name: str, stream: str, toxicity: float, attributes: dict[str, Any]):
        self.name = name
        self.stream = stream  # "upstream" or "downstream"
        self.stream_as_given = stream  # Toxiproxy shows the stream as it was sent ("UpStream")
        self.toxicity = toxicity
        self.attrs: dict[str, Any] = {}
        for key, (_kind, default) in self.all_fields().items():
            self.attrs[key] = list(default) if isinstance(default, list) else default
        self.merge_attributes(attributes)

    @classmethod
    def all_fields(cls) -> dict[str, tuple[type, Any]]:
        return {**cls.fields, **cls.common_fields}

    def merge_attributes(self, attributes: Any) -> None:
        """Decode attributes onto this toxic like Go's json.Decode into the struct: unknown keys are
        ignored, missing keys keep their value, a wrong type is a 400. Negative numbers are refused
        (a cachestorm choice: Toxiproxy silently treats them as zero or misbehaves)."""
        if attributes is None:
            return
        if not isinstance(attributes, dict):
            raise BAD_REQUEST_BODY.joined(
                f"json: cannot unmarshal {gojson.kind(attributes)} into Go struct field "
                f".attributes of type toxics.{self.go_struct or 'Toxic'}"
            )
        parsed = {}
        for key, value in attributes.items():
            spec = self.all_fields().get(key)
            if spec is None:
                continue
            parsed[key] = self._coerce(key, spec[0], value)
        self.attrs.update(parsed)

    def _coerce(self, key: str, kind: type, value: Any) -> Any:
        where = f"Go struct field {self.go_struct or 'Toxic'}.attributes.{key} of type {_GO_TYPE[kind]}"
        if value is None:
            return self.all_fields()[key][1]
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(value)} into {where}")
            if kind is int and isinstance(value, float):  # Go: 100.0 is not an int64 either
                raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal number {gojson.number_text(value)} into {where}")
            if value < 0:
                raise BAD_REQUEST_BODY.joined(f"attribute {key} must not be negative (got {value})")
            return kind(value)
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(value)} into {where}")
            return list(value)
        if kind is str:
            if not isinstance(value, str):
                raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(value)} into {where}")
            return value
        return value

    def to_json(self) -> dict:
        # common (cachestorm) attributes only when set, so the JSON is Toxiproxy's field for field
        attributes = {k: v for k, v in self.attrs.items() if k not in self.common_fields or v != self.common_fields[k][1]}
        return {
            "attributes": attributes,
            "name": self.name,
            "type": self.type_name,
            "stream": self.stream_as_given,
            "toxicity": self.toxicity,
        }

    def applies_to_link(self) -> bool:
        """Toxiproxy's draw: the toxic acts on a connection's link with probability `toxicity`."""
        return random.random() < self.toxicity

    # -- per-link behaviour (defaults: pass everything through) --------------
    def new_state(self) -> Any:
        return None

    def attach(self, link: Any, state: Any) -> None:
        pass

    def process_now(self, link: Any, state: Any, data: bytes) -> Any:
        """The chunk to pass on if this toxic can act on `data` at once with a plain call (the
        link's cheap lane), else NOT_NOW and `process` gets it. Only for a one-in, one-out toxic;
        it must have done nothing when it answers NOT_NOW."""
        return NOT_NOW

    async def process(self, link: Any, state: Any, data: bytes, emit: Emit) -> None:
        await emit(data)

    async def on_eof(self, link: Any, state: Any) -> None:
        pass

    def detach(self, link: Any, state: Any) -> None:
        pass

