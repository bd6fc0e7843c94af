"""Walk the agent's `Settings` and decide, per setting, its values key and how it is copied."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from tools.chartgen import mapping


@dataclass(frozen=True)
class Setting:
    """One agent setting and where the chart's values hold it."""

    path: str                 # settings path, e.g. "plugin.kubernetes.qps"
    model: type[BaseModel]    # the section model that declares it
    name: str                 # the field's name in that model
    info: FieldInfo
    values: str | None        # values path, None when the chart has no value for it
    wired: bool               # set by the chart's templates, not copied from values
    models: type[BaseModel] | None = field(default=None)  # dict[str, Model] settings

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.info.annotation)

    @property
    def kind(self) -> str:
        """How the template converts the value: integer, string, models or any."""
        if self.models is not None:
            return "models"
        bare = [a for a in typing.get_args(self.info.annotation) if a is not type(None)] \
            if _is_union(self.info.annotation) else [self.info.annotation]
        if bare == [int]:
            return "integer"  # helm reads numbers as float64: 68719476736 would print as 6.8e+10
        if len(bare) == 1 and bare[0] is str:
            return "string"
        return "any"

    @property
    def unset(self) -> str:
        """What an empty string or null in values becomes: omit, null or keep."""
        if self.path in mapping.OMIT_WHEN_EMPTY:
            return "omit"
        if self.nullable:
            return "omit" if self.info.default is None else "null"
        return "keep"


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _dict_of_models(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is dict:
        _key, value = typing.get_args(annotation)
        return _submodel(value)
    return None


def _values_section(settings_section: str) -> str:
    if settings_section in mapping.SECTIONS:
        return mapping.SECTIONS[settings_section]
    parent, _, name = settings_section.rpartition(".")
    return f"{_values_section(parent)}.{to_camel(name)}" if parent else to_camel(name)


def _excluded(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in mapping.NOT_IN_CHART)


def walk(model: type[BaseModel], prefix: str = "") -> list[Setting]:
    """Every setting of `model` (sections flattened), in declaration order."""
    found: list[Setting] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if _excluded(path):
            continue
        sub = _submodel(info.annotation)
        if sub is not None:
            found += walk(sub, path + ".")
            continue
        section = prefix.rstrip(".")
        wired = path in mapping.WIRED
        values: str | None = None
        if not wired or path in mapping.WIRED_WITH_VALUE:
            values = mapping.RENAMES.get(path) or f"{_values_section(section)}.{to_camel(name)}"
        found.append(Setting(path=path, model=model, name=name, info=info, values=values,
                             wired=wired, models=_dict_of_models(info.annotation)))
    return found


def lookup(tree: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path in nested dicts."""
    node = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def resolve(settings: type[BaseModel], values: dict[str, Any]) -> list[Setting]:
    """Settings with their values keys; raises ValueError listing every unmapped setting."""
    problems: list[str] = []
    resolved: list[Setting] = []
    for setting in walk(settings):
        has_value = setting.values is None or lookup(values, setting.values)[0]
        if not has_value:
            problems.append(
                f"{setting.path}: no value {setting.values!r} in values.yaml: add it with a "
                f"`# --` comment, or list the setting in tools/chartgen/mapping.py")
            continue
        if not setting.info.description:
            problems.append(f"{setting.path}: the Field has no description= (say its unit)")
        resolved.append(setting)
    listed = (*mapping.WIRED, *mapping.WIRED_WITH_VALUE, *mapping.RENAMES,
              *mapping.OMIT_WHEN_EMPTY)
    for path in listed:
        known = any(s.path == path for s in resolved) or _excluded(path)
        if not known and not any(p.startswith(path + ":") for p in problems):
            problems.append(f"{path}: listed in tools/chartgen/mapping.py but not a setting")
    if problems:
        raise ValueError("settings without a chart mapping:\n" +
                         "\n".join(f"  - {p}" for p in problems))
    return resolved
