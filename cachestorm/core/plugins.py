"""Plug-ins: the one "module:attribute" loader behind every registry, and the registries' extension list.

A registry (strategies, protections, domains, faults, toxics, key models, report sections, the CLI's
commands) maps a name to an import string and imports it on use with `load`. `registry(kind, entries)`
adds what `CACHESTORM_PLUGINS` names for that kind, so a plug-in outside the package reaches child
processes too (a target, the proxy, Locust inherit the environment; a monkeypatched dict does not):

    CACHESTORM_PLUGINS="strategy.echo=mypkg.echo:Echo fault.redis-flag=mypkg.flag:RedisFlag"

Entries are separated by spaces or commas; each is KIND.NAME=MODULE:ATTRIBUTE, KIND one of `KINDS`.
"""

from __future__ import annotations

import importlib
import os

from cachestorm.core.errors import CachestormError

PLUGINS_ENV = "CACHESTORM_PLUGINS"

# the registries CACHESTORM_PLUGINS may extend (a typo in a kind must not pass silently)
KINDS = ("strategy", "protection", "domain", "fault", "toxic", "key-model", "report-section")


class PluginError(CachestormError):
    """A registry entry that cannot be loaded. `missing` names the module that was not found, if that was it."""

    def __init__(self, message: str, missing: str | None = None):
        super().__init__(message)
        self.missing = missing


class PluginSettingError(PluginError):
    """CACHESTORM_PLUGINS itself is wrong: the user's setting, not a broken installation."""


def split(import_string: str, what: str = "plug-in") -> tuple[str, str]:
    """'package.module:Attribute' -> ('package.module', 'Attribute'); PluginError if it is not that shape."""
    module_name, sep, attribute = str(import_string).partition(":")
    if not sep or not module_name.strip() or not attribute.strip() or ":" in attribute:
        raise PluginError(f"{what} {import_string!r} is not an import string 'package.module:Attribute'")
    return module_name.strip(), attribute.strip()


def load(import_string: str, what: str = "plug-in"):
    """What the import string names (Attribute may be dotted: 'module:Class.method').

    A malformed string, a module that is not there or a missing attribute is one PluginError line;
    an error raised while the module runs is the module's own bug and propagates as it is.
    """
    module_name, attribute = split(import_string, what)
    try:
        value = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PluginError(f"{what} {import_string!r}: cannot import {module_name} ({exc.name} is missing)",
                          missing=exc.name) from exc
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise PluginError(f"{what} {import_string!r}: {module_name} has no attribute {attribute!r}") from None
    return value


def registry(kind: str, entries: dict[str, str]) -> dict[str, str]:
    """A registry's built-in entries plus the ones CACHESTORM_PLUGINS adds for `kind` (after them, in order)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plug-in kind {kind!r}")
    extended = dict(entries)
    for entry_kind, name, import_string in environment_entries():
        if entry_kind != kind:
            continue
        if name in entries:
            raise PluginSettingError(f"{PLUGINS_ENV}: {kind} {name!r} is built in; give the plug-in another name")
        extended[name] = import_string
    return extended


def environment_entries(value: str | None = None) -> list[tuple[str, str, str]]:
    """CACHESTORM_PLUGINS (or `value`) as (kind, name, import string) triples; PluginError on a bad entry."""
    text = os.environ.get(PLUGINS_ENV, "") if value is None else value
    triples = []
    for entry in text.replace(",", " ").split():
        key, sep, import_string = entry.partition("=")
        kind, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise PluginSettingError(f"{PLUGINS_ENV}: {entry!r} is not KIND.NAME=package.module:Attribute")
        if kind not in KINDS:
            raise PluginSettingError(f"{PLUGINS_ENV}: {entry!r}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        split(import_string, f"{PLUGINS_ENV} entry {entry!r}:")
        triples.append((kind, name, import_string))
    return triples
