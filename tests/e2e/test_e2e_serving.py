"""Real prediction servers answer what the model answers locally, for every built-in profile.

A scikit-learn model is trained here on iris (bundled with scikit-learn: no download),
uploaded to the harness S3 as the raw artifact a data scientist has (`model.joblib`, or
an MLflow model directory for `mlflow-pyfunc`; plus an XGBoost `model.json` for
MLServer's XGBoost runtime and MLServer's own `model-settings.json` layout), deployed
through the reference control plane to the harness cluster with the built-in profile,
whose image is the harness build of the real server (`server_profiles` override: only
the image changes). The agent recognises the artifact and configures the server; the
answers through the ingress URL, in the profile's protocol, must equal the local
`predict` on the same rows. Then v1 is replaced by v2 (a different model): the answers
change to v2's, and a client that keeps asking during the rollout sees no failed
request. A model the profile cannot serve is refused before anything is applied (a
refused replacement leaves the old model serving), and a server that cannot load its
model ends `errored` with its log.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.test_e2e_kubernetes import ACTION_TIMEOUT, Agent, agent_config
from tests.fixtures.harness import S3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_IMAGES = {"mlserver": "HARNESS_MLSERVER_IMAGE",
                 "mlflow-pyfunc": "HARNESS_MLFLOW_SERVER_IMAGE",
                 "kserve": "HARNESS_KSERVE_IMAGE"}


# ---- models ------------------------------------------------------------------------------

def iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target


def train(version: str) -> Any:
    """v1 and v2 disagree on some rows of ROWS (asserted by the tests)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    features, target = iris()
    model = (LogisticRegression(max_iter=500) if version == "v1"
             else DecisionTreeClassifier(max_depth=1, random_state=0))
    return model.fit(features, target)


def train_xgboost(version: str) -> Any:
    """v1 and v2 disagree on some rows of ROWS (asserted by the tests)."""
    import xgboost

    features, target = iris()
    size = {"v1": (20, 3), "v2": (1, 1)}[version]
    return xgboost.XGBClassifier(n_estimators=size[0], max_depth=size[1]).fit(features, target)


def rows() -> list[list[float]]:
    features, _ = iris()
    return [[float(x) for x in row] for row in features[::7]]


def local_predictions(model: Any) -> list[int]:
    import numpy as np

    return [int(x) for x in model.predict(np.asarray(rows()))]


def save_joblib(model: Any, directory: Path) -> Path:
    import joblib

    directory.mkdir(parents=True)
    joblib.dump(model, directory / "model.joblib")
    return directory


def save_model_settings(model: Any, directory: Path) -> Path:
    """MLServer's own layout: model-settings.json names the model and its runtime."""
    import json

    save_joblib(model, directory)
    (directory / "model-settings.json").write_text(json.dumps({
        "name": "flowers", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"}}))
    return directory


def save_xgboost(model: Any, directory: Path) -> Path:
    directory.mkdir(parents=True)
    model.save_model(directory / "model.json")  # XGBoost's own JSON format
    return directory


def save_mlflow(model: Any, directory: Path) -> Path:
    import mlflow.sklearn

    # MLflow 3 saves with skops, which asks to name the tree type a DecisionTree holds
    mlflow.sklearn.save_model(model, str(directory),
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    return directory


def upload(s3: S3, directory: Path) -> str:
    """Every file of `directory` under a fresh prefix of the harness bucket; the s3:// URI."""
    prefix = f"e2e-serving/{secrets.token_hex(4)}"
    client = s3.client()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3.bucket, f"{prefix}/{path.relative_to(directory)}")
    return f"s3://{s3.bucket}/{prefix}/"


# ---- protocols ---------------------------------------------------------------------------

def ask_v2(url: str, batch: list[list[float]]) -> list[int]:
    """Open Inference Protocol (V2): one FP64 tensor in, the first output tensor out.

    The request says it is a NumPy array (`content_type: np`): MLServer's MLflow runtime
    needs that for a model logged without a signature; the other runtimes accept it.
    """
    body = {"parameters": {"content_type": "np"},
            "inputs": [{"name": "input-0", "shape": [len(batch), len(batch[0])],
                        "datatype": "FP64", "data": [x for row in batch for x in row]}]}
    response = requests.post(url, json=body, timeout=10)
    response.raise_for_status()
    return [int(x) for x in response.json()["outputs"][0]["data"]]


def ask_v1(url: str, batch: list[list[float]]) -> list[int]:
    """KServe V1: {"instances": rows} -> {"predictions": [...]}."""
    response = requests.post(url, json={"instances": batch}, timeout=10)
    response.raise_for_status()
    return [int(x) for x in response.json()["predictions"]]


def ask_mlflow(url: str, batch: list[list[float]]) -> list[int]:
    """MLflow scoring server: {"inputs": rows} -> {"predictions": [...]}."""
    response = requests.post(url, json={"inputs": batch}, timeout=10)
    response.raise_for_status()
    return [int(x) for x in response.json()["predictions"]]


@dataclass(frozen=True)
class Case:
    profile: str
    save: Callable[[Any, Path], Path]
    ask: Callable[[str, list[list[float]]], list[int]]
    predict_path: str  # with {name} = the deployment id
    train: Callable[[str], Any] = train


CASES = {
    "mlserver": Case("mlserver", save_joblib, ask_v2, "/v2/models/{name}/infer"),
    "kserve": Case("kserve", save_joblib, ask_v1, "/v1/models/{name}:predict"),
    "mlflow-pyfunc": Case("mlflow-pyfunc", save_mlflow, ask_mlflow, "/invocations"),
    "mlserver-xgboost": Case("mlserver", save_xgboost, ask_v2, "/v2/models/{name}/infer",
                             train_xgboost),
    # served under the name it declares, not the deployment id
    "mlserver-settings": Case("mlserver", save_model_settings, ask_v2,
                              "/v2/models/flowers/infer"),
}


# ---- the agent ---------------------------------------------------------------------------

def serving_config(path: Path, cluster: dict[str, str], s3: S3, cp_url: str, env_id: str,
                   token: str) -> Path:
    """The e2e agent config with the built-in profiles pointed at the harness server builds."""
    missing = [name for name in SERVER_IMAGES.values() if name not in cluster]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing from the harness env: tools/harness up "
                    "builds the server images when the registry and kube run", pytrace=False)
    agent_config(path, cluster, cp_url, env_id, token)
    config = yaml.safe_load(path.read_text())
    kube = config["plugin"]["kubernetes"]
    kube["server_profiles"] = {profile: {"image": cluster[variable]}
                               for profile, variable in SERVER_IMAGES.items()}
    kube["default_server_profile"] = "mlserver"
    # the server images' own user (1000) must pass the kubelet's runAsNonRoot check and the
    # namespace's Pod Security "restricted": no UID forced for them
    kube.pop("security", None)
    kube["rollout_timeout_seconds"] = 300
    config["artifacts"] = {"s3_endpoint_url": s3.endpoint}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def serving_agent(control_plane: Any, cluster: dict[str, str], s3: S3, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Agent]]:
    """(environment id, agent): `management-agent run` on the harness cluster, S3 keys in env."""
    env_id, token = control_plane.create_environment()
    config = serving_config(tmp_path / "agent.yaml", cluster, s3, control_plane.url, env_id,
                            token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    agent = Agent(config, tmp_path / "agent.log")
    try:
        yield env_id, agent
    except BaseException:
        print(f"\n----- agent log -----\n{agent.log()}")
        raise
    finally:
        agent.stop()


def finish(control_plane: Any, env_id: str, action: dict[str, Any], agent: Agent,
           timeout: float = ACTION_TIMEOUT) -> dict[str, Any]:
    action = action.get("action", action)
    done = control_plane.admin.wait_action(env_id, action["id"], timeout=timeout)
    assert done["state"] == "completed", (done, agent.log()[-4000:])
    return dict(done["result"])


def answers(case: Case, url: str, timeout: float = 60) -> list[int]:
    """The server's answers for ROWS (retrying while the ingress picks up the route)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return case.ask(url, rows())
        except (requests.RequestException, KeyError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no prediction from {url}: {exc}") from exc
            time.sleep(1)


class Client(threading.Thread):
    """Keeps asking during a rollout; records every answer and every failure."""

    def __init__(self, case: Case, url: str) -> None:
        super().__init__(daemon=True)
        self.case, self.url = case, url
        self.answers: list[list[int]] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.answers.append(self.case.ask(self.url, rows()))
            except (requests.RequestException, KeyError, ValueError) as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {exc}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


# ---- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("profile", list(CASES))
def test_real_server_answers_like_the_local_model_and_replacement_switches_without_errors(
        profile: str, control_plane: Any, serving_agent: tuple[str, Agent],
        cluster: dict[str, str], s3: S3, tmp_path: Path) -> None:
    case = CASES[profile]
    env_id, agent = serving_agent
    v1, v2 = case.train("v1"), case.train("v2")
    expected_v1, expected_v2 = local_predictions(v1), local_predictions(v2)
    assert expected_v1 != expected_v2  # otherwise the replacement proves nothing

    deployment = f"serve-{profile}"
    uri = upload(s3, case.save(v1, tmp_path / "v1"))
    result = finish(control_plane, env_id, control_plane.deploy(
        env_id, deployment, f"{profile}-v1", uri=uri, server_profile=case.profile), agent)
    assert result["state"] == "ready", (result, agent.log()[-4000:])
    assert result["status"] == "passing", result  # incl. the model's health through the ingress
    url = result["data"]["predictionUrl"]
    ingress = cluster["HARNESS_INGRESS_URL"].rstrip("/")
    assert url == f"{ingress}/{deployment}{case.predict_path.format(name=deployment)}"
    assert answers(case, url) == expected_v1

    uri2 = upload(s3, case.save(v2, tmp_path / "v2"))
    client = Client(case, url)
    client.start()
    try:
        result = finish(control_plane, env_id, control_plane.admin.replace(
            env_id, deployment, {"model": {"id": f"{profile}-v2", "uri": uri2}}), agent)
        assert result["state"] == "ready", (result, agent.log()[-4000:])
        assert result["data"]["currentModelId"] == f"{profile}-v2"
        deadline = time.monotonic() + 60  # the ingress drops the old pod's endpoint
        while answers(case, url) != expected_v2 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        client.stop()
    assert answers(case, url) == expected_v2
    assert client.failures == [], client.failures
    assert {tuple(a) for a in client.answers} <= {tuple(expected_v1), tuple(expected_v2)}
    assert tuple(expected_v2) in {tuple(a) for a in client.answers}


def test_server_that_cannot_load_the_model_ends_errored_with_its_log(
        control_plane: Any, serving_agent: tuple[str, Agent], s3: S3, tmp_path: Path) -> None:
    """A `model.joblib` that is not a pickle: MLServer starts, fails to load it and exits.

    It exits with status 0 and restarts in a loop; the rollout is given up after
    `fail_fast_seconds` of restarts (30 s here; at the latest at the 120 s deadline), with
    the server's last log lines in the message.
    """
    env_id, agent = serving_agent
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"this is not a pickle" * 20)
    result = finish(control_plane, env_id, control_plane.deploy(
        env_id, "broken", "broken-v1", uri=upload(s3, broken), server_profile="mlserver",
        config={"rollout_timeout_seconds": 120}), agent, timeout=300)
    assert result["status"] == "failing", result
    assert result["state"] == "errored", result
    message = result["data"]["message"]
    # the server's own words (the unpickling traceback, then its shutdown: depending on
    # when the log is read, the tail holds more or less of the traceback)
    assert "last log lines:" in message, message
    log = message.split("last log lines:", 1)[1]
    assert any(word in log for word in ("pickle", "load", "Error")), message


def test_model_the_profile_cannot_serve_is_refused_before_anything_is_applied(
        control_plane: Any, serving_agent: tuple[str, Agent], cluster: dict[str, str],
        s3: S3, tmp_path: Path) -> None:
    env_id, agent = serving_agent
    uri = upload(s3, save_joblib(train("v1"), tmp_path / "raw"))
    result = finish(control_plane, env_id, control_plane.deploy(
        env_id, "refused", "raw-v1", uri=uri, server_profile="mlflow-pyfunc"), agent,
        timeout=120)
    assert result["status"] == "failing", result
    message = result["data"]["message"]
    assert "server profile 'mlflow-pyfunc' cannot serve this model: found a scikit-learn " \
           "model file at model.joblib" in message, message
    assert "profile mlserver or kserve would serve it" in message, message
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    kube = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                         namespace=cluster["NAMESPACE"]))
    try:
        assert kube.list("apps/v1", "Deployment") == []
    finally:
        kube.close()


def test_replacement_the_profile_cannot_serve_leaves_the_old_model_serving(
        control_plane: Any, serving_agent: tuple[str, Agent], s3: S3, tmp_path: Path) -> None:
    env_id, agent = serving_agent
    case = CASES["mlserver"]
    model = train("v1")
    result = finish(control_plane, env_id, control_plane.deploy(
        env_id, "kept", "kept-v1", uri=upload(s3, save_joblib(model, tmp_path / "v1")),
        server_profile="mlserver"), agent)
    assert result["state"] == "ready", (result, agent.log()[-4000:])
    url = result["data"]["predictionUrl"]
    assert answers(case, url) == local_predictions(model)

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("the model is on its way\n")
    result = finish(control_plane, env_id, control_plane.admin.replace(
        env_id, "kept", {"model": {"id": "kept-v2", "uri": upload(s3, notes)}}), agent)
    assert result["status"] == "failing", result
    assert result["data"]["oldModelInUse"] is True, result
    assert result["data"]["currentModelId"] == "kept-v1", result
    assert "found no model file a built-in server loads (files: README.md)" in \
        result["data"]["message"], result
    assert answers(case, url) == local_predictions(model)


@pytest.mark.parametrize("profile", list(SERVER_IMAGES))
def test_server_images_run_as_a_numeric_non_root_user(profile: str,
                                                      cluster: dict[str, str]) -> None:
    """What a kubelet checks for runAsNonRoot, read from the images' configuration."""
    import json
    import subprocess

    image = cluster[SERVER_IMAGES[profile]]
    inspected = subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                                f"docker://{image}"], capture_output=True, text=True,
                               check=True)
    user = json.loads(inspected.stdout)["config"].get("User", "")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
