"""Model-format detection from file names and a peek at the ambiguous files."""

from __future__ import annotations

import json

import pytest

from agent.serving.formats import Kind, detect

MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    python_version: 3.11.7
  sklearn:
    pickled_model: model.pkl
    sklearn_version: 1.9.1
"""
XGB_JSON = b'{"learner":{"attributes":{},"feature_names":[]},"version":[3,2,0]}'
LGBM_TXT = b"tree\nversion=v4\nnum_class=1\n"


def reader(contents: dict[str, bytes]):
    return lambda path: contents.get(path, b"")


def test_mlflow_directory_with_its_flavours_wins_over_the_pickle_inside() -> None:
    files = {"MLmodel": MLMODEL, "model.pkl": b"x", "requirements.txt": b"scikit-learn"}
    fmt = detect(list(files), reader(files))
    assert (fmt.kind, fmt.path, fmt.flavors) == (Kind.MLFLOW, "", ("python_function", "sklearn"))


def test_mlmodel_with_odd_flavour_keys_and_a_large_signature_still_parses() -> None:
    big = b"signature:\n  inputs: '" + b"x" * 200_000 + b"'\nflavors:\n  1: {}\n  sklearn: {}\n"
    files = {"MLmodel": big, "model.pkl": b"x"}
    fmt = detect(list(files), reader(files))
    assert (fmt.kind, fmt.flavors) == (Kind.MLFLOW, ("1", "sklearn"))


def test_nested_mlflow_model_is_found_with_its_folder() -> None:
    files = {"model/MLmodel": MLMODEL, "model/model.pkl": b"x"}
    fmt = detect(list(files), reader(files))
    assert (fmt.kind, fmt.path) == (Kind.MLFLOW, "model")


def test_model_settings_gives_the_declared_name_and_runtime() -> None:
    settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel"}
    files = {"model-settings.json": json.dumps(settings).encode(), "model.joblib": b"x"}
    fmt = detect(list(files), reader(files))
    assert (fmt.kind, fmt.name, fmt.implementation) == (
        Kind.MLSERVER_SETTINGS, "iris", "mlserver_sklearn.SKLearnModel")


@pytest.mark.parametrize(("name", "kind"), [
    ("model.joblib", Kind.SKLEARN), ("clf.pkl", Kind.SKLEARN), ("m.pickle", Kind.SKLEARN),
    ("model.ubj", Kind.XGBOOST), ("model.bst", Kind.XGBOOST),
])
def test_framework_files_by_suffix(name: str, kind: Kind) -> None:
    fmt = detect([name, "README.md"], reader({}))
    assert (fmt.kind, fmt.path) == (kind, name)


def test_json_is_xgboost_only_when_it_holds_a_learner() -> None:
    assert detect(["model.json"], reader({"model.json": XGB_JSON})).kind == Kind.XGBOOST
    assert detect(["meta.json"], reader({"meta.json": b'{"a": 1}'})).kind == Kind.UNKNOWN


def test_txt_is_lightgbm_only_when_it_starts_like_one() -> None:
    assert detect(["model.txt"], reader({"model.txt": LGBM_TXT})).kind == Kind.LIGHTGBM
    assert detect(["notes.txt"], reader({"notes.txt": b"hello\n"})).kind == Kind.UNKNOWN


def test_unknown_lists_what_it_saw_and_ignores_hidden_files() -> None:
    fmt = detect(["server.py", "model.json", ".git/config"],
                 reader({"model.json": b'{"answer": 2}'}))
    assert fmt.kind == Kind.UNKNOWN
    assert fmt.describe() == ("no model file a built-in server loads "
                              "(files: model.json, server.py)")
