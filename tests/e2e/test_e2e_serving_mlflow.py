"""MLflow-logged models end to end: registry alias -> real server -> the local model's answers.

A model is logged with MLflow itself (scikit-learn and XGBoost flavours) to the harness
MLflow server, registered, and promoted with the `@production` alias. The agent
(control_plane.kind=mlflow, plugin kubernetes) fetches `models:/<name>/<version>`,
recognises the MLflow model directory and serves it with MLflow's scoring server
(`mlflow-pyfunc`) or with MLServer's MLflow runtime (chosen per model with the
`management-agent.server-profile` tag). The answers through the ingress must equal the
local predictions. Then a `management-agent.replicas` tag set on the running version
scales the deployment without an agent restart.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.controlplane.mlflow import deployment_id_for
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.settings import KubernetesSettings
from tests.e2e.test_e2e_kubernetes import Agent
from tests.e2e.test_e2e_mlflow import api, wait_for_tag
from tests.e2e.test_e2e_serving import (
    CASES,
    answers,
    iris,
    local_predictions,
    serving_config,
)
from tests.fixtures.harness import Mlflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def train(flavour: str) -> Any:
    features, target = iris()
    if flavour == "xgboost":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=8, max_depth=2).fit(features, target)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500).fit(features, target)


def log_and_register(mlflow_server: Mlflow, flavour: str, model: Any, name: str) -> str:
    """Log with MLflow's own API into the harness server and register; returns the version."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.uri)
    with mlflow.start_run():
        module = mlflow.xgboost if flavour == "xgboost" else mlflow.sklearn
        features, _ = iris()  # the input example gives the model its signature
        info = module.log_model(model, name="model", registered_model_name=name,
                                input_example=features[:2])
    return str(info.registered_model_version)


@pytest.mark.parametrize(("flavour", "profile"), [
    ("sklearn", "mlflow-pyfunc"),
    ("xgboost", "mlflow-pyfunc"),
    ("sklearn", "mlserver"),
])
def test_alias_deploys_an_mlflow_logged_model_that_answers_like_the_local_one(
        flavour: str, profile: str, cluster: dict[str, str], mlflow: Mlflow, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"e2e-{flavour}-{secrets.token_hex(3)}"
    model = train(flavour)
    expected = local_predictions(model)
    api(mlflow, "POST", "registered-models/create", name=name,
        tags=[{"key": "deploy", "value": "true"},
              {"key": "management-agent.server-profile", "value": profile}])
    version = log_and_register(mlflow, flavour, model, name)
    api(mlflow, "POST", "registered-models/alias", name=name, alias="production",
        version=version)

    config_path = serving_config(tmp_path / "agent.yaml", cluster, mlflow.s3, "http://unused",
                                 "mlflow", "-")
    config = yaml.safe_load(config_path.read_text())
    config["control_plane"] = {"kind": "mlflow", "environment_id": "mlflow-serving",
                               "poll_interval_seconds": 1,
                               "mlflow": {"tracking_uri": mlflow.uri, "name_pattern": name}}
    config["artifacts"]["mlflow_tracking_uri"] = mlflow.uri
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", mlflow.s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", mlflow.s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", mlflow.s3.region)
    agent = Agent(config_path, tmp_path / "agent.log")
    kube = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                         namespace=cluster["NAMESPACE"]))
    try:
        tags = wait_for_tag(mlflow, name, version, "ready", agent)
        deployment_id = deployment_id_for(name, "production")
        url = tags["management-agent.url"]
        path = CASES[profile].predict_path.format(name=deployment_id)
        assert url == f"{cluster['HARNESS_INGRESS_URL'].rstrip('/')}/{deployment_id}{path}"
        assert answers(CASES[profile], url) == expected

        # an override tag on the running version: no restart, the Deployment follows
        api(mlflow, "POST", "model-versions/set-tag", name=name, version=version,
            key="management-agent.replicas", value="2")
        deadline = time.monotonic() + 300
        live: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = kube.list("apps/v1", "Deployment")
            live = found[0] if found else {}
            if (live.get("spec", {}).get("replicas") == 2
                    and live.get("status", {}).get("availableReplicas") == 2):
                break
            time.sleep(2)
        assert live.get("spec", {}).get("replicas") == 2, (live, agent.log()[-3000:])
        assert live.get("status", {}).get("availableReplicas") == 2, (live.get("status"),
                                                                      agent.log()[-3000:])
        assert answers(CASES[profile], url) == expected
    except BaseException:
        print(f"\n----- agent log -----\n{agent.log()}")
        raise
    finally:
        agent.stop()
        kube.close()
