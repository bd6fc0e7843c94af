"""What a fetched model is: an MLflow model, MLServer settings, or a raw framework file.

Detection looks at the file names of the model and reads at most a few KiB of the
files whose name alone is ambiguous (`MLmodel`, `model-settings.json`, `*.json`, `*.txt`).
It never loads the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import yaml

PEEK_BYTES = 1024 * 1024  # an MLmodel with a large signature still parses

SKLEARN_SUFFIXES = (".joblib", ".pkl", ".pickle")
XGBOOST_SUFFIXES = (".json", ".ubj", ".bst")
LIGHTGBM_SUFFIXES = (".txt",)


class Kind(StrEnum):
    """The model formats the built-in profiles know."""

    MLFLOW = "mlflow"
    MLSERVER_SETTINGS = "model-settings"
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    UNKNOWN = "unknown"


DESCRIPTIONS = {
    Kind.MLFLOW: "an MLflow model directory",
    Kind.MLSERVER_SETTINGS: "an MLServer model-settings.json",
    Kind.SKLEARN: "a scikit-learn model file",
    Kind.XGBOOST: "an XGBoost model file",
    Kind.LIGHTGBM: "a LightGBM model file",
    Kind.UNKNOWN: "no model file a built-in server loads",
}


@dataclass(frozen=True)
class ModelFormat:
    """The result of `detect`: the kind, where it sits in the model, and its details."""

    kind: Kind
    path: str = ""  # the model file, or the directory holding MLmodel / model-settings.json
    flavors: tuple[str, ...] = ()  # MLflow flavours, from MLmodel
    name: str | None = None  # the model name a model-settings.json declares
    implementation: str | None = None  # the runtime a model-settings.json names
    files: tuple[str, ...] = field(default=(), compare=False)  # what was looked at

    def describe(self) -> str:
        """One phrase for messages: what was found and where."""
        text = DESCRIPTIONS[self.kind]
        if self.kind == Kind.MLFLOW:
            text += f" (flavours: {', '.join(self.flavors) or 'none'})"
        if self.kind == Kind.UNKNOWN:
            shown = ", ".join(self.files[:8]) + (", ..." if len(self.files) > 8 else "")
            return f"{text} (files: {shown or 'none'})"
        return f"{text} at {self.path or '.'}" if self.kind != Kind.MLFLOW or self.path else text


Reader = Callable[[str], bytes]  # reads (up to PEEK_BYTES of) a file of the model by path


def _depth(path: str) -> int:
    return path.count("/")


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _visible(path: str) -> bool:
    return not any(part.startswith(".") for part in path.split("/"))


def detect(paths: Sequence[str], read: Reader) -> ModelFormat:
    """The format of a model made of `paths` (POSIX, relative); `read` peeks at a file.

    Priority: an MLflow `MLmodel`, then an MLServer `model-settings.json`, then a raw
    framework file; the shallowest match wins (an MLflow model nested in `model/`).
    """
    files = tuple(sorted((p for p in paths if _visible(p)), key=lambda p: (_depth(p), p)))
    names = {p: p.rsplit("/", 1)[-1] for p in files}
    for path in files:
        if names[path] == "MLmodel":
            return _mlflow(path, read, files)
    for path in files:
        if names[path] == "model-settings.json":
            return _model_settings(path, read, files)
    for path in files:
        if names[path].lower().endswith(SKLEARN_SUFFIXES):
            return ModelFormat(Kind.SKLEARN, path, files=files)
    for path in files:
        lower = names[path].lower()
        if lower.endswith((".ubj", ".bst")) or (lower.endswith(".json") and _is_xgboost_json(
                read(path))):
            return ModelFormat(Kind.XGBOOST, path, files=files)
    for path in files:
        if names[path].lower().endswith(LIGHTGBM_SUFFIXES) and _is_lightgbm(read(path)):
            return ModelFormat(Kind.LIGHTGBM, path, files=files)
    return ModelFormat(Kind.UNKNOWN, files=files)


def _mlflow(path: str, read: Reader, files: tuple[str, ...]) -> ModelFormat:
    try:
        meta = yaml.safe_load(read(path)) or {}
    except yaml.YAMLError:
        meta = {}
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    names = tuple(sorted(str(k) for k in flavors)) if isinstance(flavors, dict) else ()
    return ModelFormat(Kind.MLFLOW, _dirname(path), flavors=names, files=files)


def _model_settings(path: str, read: Reader, files: tuple[str, ...]) -> ModelFormat:
    try:
        data = json.loads(read(path))
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    name = data.get("name")
    implementation = data.get("implementation")
    return ModelFormat(Kind.MLSERVER_SETTINGS, _dirname(path),
                       name=name if isinstance(name, str) and name else None,
                       implementation=implementation if isinstance(implementation, str) else None,
                       files=files)


def _is_xgboost_json(head: bytes) -> bool:
    """XGBoost's JSON models start with {"learner": ...} (or carry it early on)."""
    text = head[:PEEK_BYTES].decode("utf-8", "replace").lstrip()
    return text.startswith("{") and '"learner"' in text


def _is_lightgbm(head: bytes) -> bool:
    """LightGBM's text models start with `tree` and a `version=` line."""
    lines = head[:256].decode("utf-8", "replace").splitlines()
    return len(lines) >= 2 and lines[0].strip() == "tree" and lines[1].startswith("version=")
