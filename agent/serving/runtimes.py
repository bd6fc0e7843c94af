"""How each built-in server is told to load a model of a given format.

`configure(server, fmt, model_path, name)` returns the profile fields to change
(environment, arguments, paths), or raises `InvalidActionError` saying what was
found and which profile would serve it. Readiness is always model-level:
MLServer `/v2/models/<name>/ready`, KServe `/v1/models/<name>`, and MLflow's
`/ping`, which answers only once the model is loaded (the scoring server loads
it before it binds its port).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.errors import InvalidActionError
from agent.serving.formats import Kind, ModelFormat

MLSERVER = "mlserver"
MLFLOW = "mlflow"
KSERVE = "kserve"

# built-in profile -> the server it runs
SERVER_OF_PROFILE = {"mlserver": MLSERVER, "mlflow-pyfunc": MLFLOW, "kserve": KSERVE}

MLSERVER_RUNTIMES = {
    Kind.SKLEARN: "mlserver_sklearn.SKLearnModel",
    Kind.XGBOOST: "mlserver_xgboost.XGBoostModel",
    Kind.LIGHTGBM: "mlserver_lightgbm.LightGBMModel",
    Kind.MLFLOW: "mlserver_mlflow.MLflowRuntime",
}
# which built-in profiles serve what (for the "would serve it" hint)
SERVED_BY = {
    Kind.MLFLOW: ("mlflow-pyfunc", "mlserver"),
    Kind.MLSERVER_SETTINGS: ("mlserver",),
    Kind.SKLEARN: ("mlserver", "kserve"),
    Kind.XGBOOST: ("mlserver",),
    Kind.LIGHTGBM: ("mlserver",),
    Kind.UNKNOWN: (),
}
PYFUNC = "python_function"

_URL_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # goes into health and predict paths


@dataclass(frozen=True)
class Runtime:
    """Profile fields to set for this model (None: keep the profile's)."""

    description: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] | None = None
    health_path: str | None = None
    predict_path: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The `config.profile` mapping that applies this runtime (env merged by the caller)."""
        data: dict[str, Any] = {}
        if self.args is not None:
            data["args"] = list(self.args)
        for key in ("health_path", "predict_path"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


def _join(model_path: str, relative: str) -> str:
    return f"{model_path.rstrip('/')}/{relative}" if relative else model_path


def _refuse(profile: str, fmt: ModelFormat, why: str) -> InvalidActionError:
    others = [p for p in SERVED_BY[fmt.kind] if p != profile]
    hint = (f"; profile {' or '.join(others)} would serve it" if others else
            "; no built-in profile serves it: give an MLflow model, a model-settings.json, "
            "a scikit-learn *.joblib/*.pkl, an XGBoost *.json/*.ubj/*.bst or a LightGBM *.txt "
            "model, or a custom profile/image")
    return InvalidActionError(f"server profile {profile!r} cannot serve this model: found "
                              f"{fmt.describe()}{why}{hint}")


def configure(profile: str, server: str, fmt: ModelFormat, model_path: str,
              name: str) -> Runtime:
    """The runtime configuration of `server` (one of MLSERVER, MLFLOW, KSERVE) for `fmt`."""
    if server == MLSERVER:
        return _mlserver(profile, fmt, model_path, name)
    if server == MLFLOW:
        return _mlflow(profile, fmt, model_path)
    if server == KSERVE:
        return _kserve(profile, fmt, model_path, name)
    raise ValueError(f"unknown server {server!r}")


def _mlserver(profile: str, fmt: ModelFormat, model_path: str, name: str) -> Runtime:
    if fmt.kind == Kind.MLSERVER_SETTINGS:
        # MLServer loads every model-settings.json under its models dir and ignores the
        # MLSERVER_MODEL_* defaults; the model answers under the name it declares
        # (MLServer falls back to the folder name)
        served = fmt.name or (fmt.path.rsplit("/", 1)[-1] if fmt.path else None)
        if served is None:
            raise _refuse(profile, fmt, ", but it declares no model name (\"name\")")
        if not _URL_SAFE_NAME.fullmatch(served):
            raise _refuse(profile, fmt, f", but its model name {served!r} cannot be part of a "
                          "URL path (use letters, digits, '.', '_' and '-')")
        return Runtime(f"{fmt.describe()} (model {served!r})", env={},
                       health_path=f"/v2/models/{served}/ready",
                       predict_path=f"/v2/models/{served}/infer")
    if fmt.kind == Kind.MLFLOW and PYFUNC not in fmt.flavors:
        raise _refuse(profile, fmt, f", which has no {PYFUNC} flavour (MLServer's MLflow "
                      "runtime loads models through pyfunc)")
    runtime = MLSERVER_RUNTIMES.get(fmt.kind)
    if runtime is None:
        raise _refuse(profile, fmt, "")
    return Runtime(
        f"{fmt.describe()}: MLServer runtime {runtime}",
        env={"MLSERVER_MODEL_IMPLEMENTATION": runtime,
             "MLSERVER_MODEL_NAME": name,
             "MLSERVER_MODEL_URI": _join(model_path, fmt.path)},
        health_path=f"/v2/models/{name}/ready",
        predict_path=f"/v2/models/{name}/infer",
    )


def _mlflow(profile: str, fmt: ModelFormat, model_path: str) -> Runtime:
    if fmt.kind != Kind.MLFLOW:
        raise _refuse(profile, fmt, " (MLflow's scoring server needs an MLflow model "
                      "directory with an MLmodel file)")
    if PYFUNC not in fmt.flavors:
        raise _refuse(profile, fmt, f", which has no {PYFUNC} flavour (the scoring server "
                      "serves pyfunc models)")
    return Runtime(
        f"{fmt.describe()}: MLflow scoring server",
        args=["-m", _join(model_path, fmt.path), "-h", "0.0.0.0", "-p", "{port}",
              "--env-manager", "local"],
        health_path="/ping", predict_path="/invocations",
    )


def _kserve(profile: str, fmt: ModelFormat, model_path: str, name: str) -> Runtime:
    if fmt.kind != Kind.SKLEARN:  # the profile's image is KServe's sklearnserver
        raise _refuse(profile, fmt, " (the kserve profile runs KServe's sklearnserver: "
                      "a scikit-learn *.joblib/*.pkl file)")
    folder = fmt.path.rsplit("/", 1)[0] if "/" in fmt.path else ""
    return Runtime(
        f"{fmt.describe()}: KServe V1 model server",
        args=[f"--model_name={name}", f"--model_dir={_join(model_path, folder)}",
              "--http_port={port}"],
        health_path=f"/v1/models/{name}", predict_path=f"/v1/models/{name}:predict",
    )
