"""Each built-in server gets the runtime, name and model-level readiness for the model."""

from __future__ import annotations

import pytest

from agent.errors import InvalidActionError
from agent.serving.formats import Kind, ModelFormat
from agent.serving.runtimes import KSERVE, MLFLOW, MLSERVER, configure

SKLEARN = ModelFormat(Kind.SKLEARN, "model.joblib")
PYFUNC = ModelFormat(Kind.MLFLOW, "", flavors=("python_function", "sklearn"))


@pytest.mark.parametrize(("fmt", "implementation", "uri"), [
    (SKLEARN, "mlserver_sklearn.SKLearnModel", "/mnt/models/model.joblib"),
    (ModelFormat(Kind.XGBOOST, "sub/model.ubj"), "mlserver_xgboost.XGBoostModel",
     "/mnt/models/sub/model.ubj"),
    (ModelFormat(Kind.LIGHTGBM, "model.txt"), "mlserver_lightgbm.LightGBMModel",
     "/mnt/models/model.txt"),
    (PYFUNC, "mlserver_mlflow.MLflowRuntime", "/mnt/models"),
])
def test_mlserver_is_told_its_runtime(fmt: ModelFormat, implementation: str, uri: str) -> None:
    runtime = configure("mlserver", MLSERVER, fmt, "/mnt/models", "iris")
    assert runtime.env == {"MLSERVER_MODEL_IMPLEMENTATION": implementation,
                           "MLSERVER_MODEL_NAME": "iris", "MLSERVER_MODEL_URI": uri}
    assert runtime.health_path == "/v2/models/iris/ready"
    assert runtime.predict_path == "/v2/models/iris/infer"


def test_mlserver_model_settings_answer_under_their_own_name() -> None:
    fmt = ModelFormat(Kind.MLSERVER_SETTINGS, "", name="flowers")
    runtime = configure("mlserver", MLSERVER, fmt, "/mnt/models", "iris")
    assert runtime.env == {}
    assert (runtime.health_path, runtime.predict_path) == (
        "/v2/models/flowers/ready", "/v2/models/flowers/infer")


@pytest.mark.parametrize("name", ["my model", "a/b", "x?y=1", "m#1"])
def test_a_declared_name_that_cannot_be_a_url_path_is_refused(name: str) -> None:
    fmt = ModelFormat(Kind.MLSERVER_SETTINGS, "", name=name)
    with pytest.raises(InvalidActionError, match="cannot be part of a URL path"):
        configure("mlserver", MLSERVER, fmt, "/mnt/models", "iris")


def test_mlflow_server_serves_a_pyfunc_directory_where_it_lies() -> None:
    fmt = ModelFormat(Kind.MLFLOW, "model", flavors=("python_function", "xgboost"))
    runtime = configure("mlflow-pyfunc", MLFLOW, fmt, "/mnt/models", "iris")
    assert runtime.args is not None and runtime.args[:2] == ["-m", "/mnt/models/model"]
    assert (runtime.health_path, runtime.predict_path) == ("/ping", "/invocations")


def test_kserve_gets_name_and_folder() -> None:
    fmt = ModelFormat(Kind.SKLEARN, "v1/model.joblib")
    runtime = configure("kserve", KSERVE, fmt, "/mnt/models", "iris")
    assert runtime.args == ["--model_name=iris", "--model_dir=/mnt/models/v1",
                            "--http_port={port}"]
    assert runtime.health_path == "/v1/models/iris"


@pytest.mark.parametrize(("profile", "server", "fmt", "message"), [
    ("mlflow-pyfunc", MLFLOW, SKLEARN,
     "found a scikit-learn model file at model.joblib .*profile mlserver or kserve would "
     "serve it"),
    ("kserve", KSERVE, PYFUNC,
     "found an MLflow model directory \\(flavours: python_function, sklearn\\).*profile "
     "mlflow-pyfunc or mlserver would serve it"),
    ("mlserver", MLSERVER, ModelFormat(Kind.MLFLOW, "", flavors=("sklearn",)),
     "no python_function flavour.*profile mlflow-pyfunc would serve it"),
    ("mlserver", MLSERVER, ModelFormat(Kind.UNKNOWN, files=("server.py",)),
     "found no model file a built-in server loads \\(files: server.py\\); no built-in "
     "profile serves it"),
])
def test_what_a_server_cannot_serve_is_refused_with_what_would(
        profile: str, server: str, fmt: ModelFormat, message: str) -> None:
    with pytest.raises(InvalidActionError, match=message):
        configure(profile, server, fmt, "/mnt/models", "iris")
