"""Layered loading of a pydantic model: defaults < YAML file < environment < `--set`.

Kept apart from the settings models in `agent.config`, so that adding a setting
touches only the model, and the layering is written once. The result is
validated once and a bad configuration fails with one `ConfigError` that lists
every bad key, where it came from and why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from agent.errors import ConfigError

ENV_PREFIX = "MGMT_AGENT_"
# MGMT_AGENT_CP_* configure the `control-plane` command (server and admin CLI), not the agent.
RESERVED_PREFIXES = ("MGMT_AGENT_CP_",)

M = TypeVar("M", bound=BaseModel)


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


_TEXT_TYPES = (str, SecretStr, Path)
_NULLS = ("null", "Null", "NULL", "~")


def _is_text_setting(model: type[BaseModel], path: Sequence[str]) -> bool:
    """True when the setting at `path` holds text (a string, secret or path), not YAML."""
    node: Any = model
    annotation: Any = None
    for key in path:
        field = node.model_fields.get(key) if isinstance(node, type) and issubclass(
            node, BaseModel) else None
        if field is None:
            return False
        annotation = field.annotation
        node = next((arg for arg in (annotation, *get_args(annotation))
                      if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
    if get_origin(annotation) in (Union, UnionType):  # Optional[...] and other unions
        kinds = [arg for arg in get_args(annotation) if arg is not NoneType]
    else:
        kinds = [annotation]
    return all(kind in _TEXT_TYPES for kind in kinds)


def _parse_scalar(model: type[BaseModel], text: str, path: Sequence[str] = ()) -> Any:
    """Environment and --set values are YAML scalars: '5' is 5, 'true' is True, '[a]' a list.

    Text settings (strings, secrets, paths) take the value as given: YAML would turn a
    token '12345678' into a number, 'p4ss #1' into 'p4ss' and '#x' or '&x' into nothing.
    """
    if _is_text_setting(model, path) and text.strip() not in _NULLS:
        return text
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, (*prefix, str(key))))
        else:
            flat[(*prefix, str(key))] = value
    return flat


def load_layered(
    model: type[M],
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> M:
    """Build and validate `model` from its layers; raise one ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    sources: dict[tuple[str, ...], str] = {}
    tree: dict[str, Any] = {}

    config_file = config_file or (
        Path(environ[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in environ else None
    )
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping at the top level")
        _merge(tree, loaded)
        sources.update({path: f"file {config_file}" for path in _flatten(loaded)})

    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        if name.startswith(RESERVED_PREFIXES):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        if not all(path):
            problems.append(f"{name}: empty key segment (use '__' between levels)")
            continue
        _set_path(tree, path, _parse_scalar(model, raw, path))
        sources[path] = f"env {name}"

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        path = tuple(key.strip().split("."))
        _set_path(tree, path, _parse_scalar(model, raw, path))
        sources[path] = "--set"

    try:
        result = model.model_validate(tree)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            origin = next(
                (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None
            )
            where = f" (from {origin})" if origin else ""
            problems.append(f"{'.'.join(loc)}: {error['msg']}{where}")
        result = None
    if problems:
        listing = "\n".join(f"  - {line}" for line in problems)
        raise ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{listing}")
    assert result is not None
    return result
