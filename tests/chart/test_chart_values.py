"""Typos, wrong types and contradictory values fail at install with a clear message."""

from __future__ import annotations

import pytest
from chart_helpers import CHART, MINIMAL, agent_config, helm, render, render_error


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("foo=bar", "Additional property foo is not allowed"),
        ("agent.logLevl=INFO", "Additional property logLevl is not allowed"),
        ("imageBuilder.serviceAcount.create=true",
         "Additional property serviceAcount is not allowed"),
        ("agent.workers=many", "agent.workers: Invalid type. Expected: integer, given: string"),
        ("agent.replicas=true", "agent.replicas: Invalid type. Expected: integer, given: boolean"),
        ("imageBuilder.builder=docker", "imageBuilder.builder must be one of"),
        ("predictionServer.ingressMode=traefik", "predictionServer.ingressMode must be one of"),
        ("controlPlane.pollIntervalSeconds=0", "pollIntervalSeconds: Must be greater than 0"),
        ("controlPlane.url=cp:8080", "controlPlane.url: Does not match pattern"),
        ("predictionServer.outfacingUrlRoot=models.example.com",
         "predictionServer.outfacingUrlRoot: Does not match pattern"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(override: str, message: str) -> None:
    assert message in render_error(sets=[override])


def test_config_map_and_secret_name_are_mutually_exclusive() -> None:
    error = render_error(sets=["imageBuilder.configMap=kaniko-ecr",
                               "imageBuilder.secretName=acr-push"])
    assert "imageBuilder.configMap and imageBuilder.secretName are mutually exclusive" in error


def test_ca_bundle_takes_one_source() -> None:
    error = render_error(sets=["artifacts.caBundle.configMap=a", "artifacts.caBundle.secret=b"])
    assert "artifacts.caBundle.configMap and artifacts.caBundle.secret are mutually exclusive" \
        in error


def test_several_replicas_need_leader_election() -> None:
    assert "agent.replicas > 1 needs agent.leaderElection.enabled=true" in \
        render_error(sets=["agent.replicas=2"])


def test_builder_needs_a_target_repository() -> None:
    assert "imageBuilder.generatedImageRepository is required with imageBuilder.builder=direct" \
        in render_error(sets=["imageBuilder.generatedImageRepository="])


def test_unknown_default_server_profile_is_refused() -> None:
    error = render_error(sets=["predictionServer.defaultServerProfile=tritonn"])
    assert 'defaultServerProfile "tritonn" is neither a built-in profile' in error


def test_kaniko_cannot_read_a_registry_ca_secret() -> None:
    error = render_error(sets=["imageBuilder.builder=kaniko",
                               "imageBuilder.registryCA.secret=corp-ca"])
    assert "Kaniko, which reads registry CA certificates from a ConfigMap" in error


def test_mlflow_needs_a_tracking_uri() -> None:
    assert "controlPlane.mlflow.trackingUri is required" in \
        render_error(sets=["controlPlane.kind=mlflow"])


def test_gateway_mode_needs_parent_refs() -> None:
    """An HTTPRoute without parentRefs attaches to no Gateway: refused by the schema (helm
    template and helm lint), like the agent's settings refuse it at start."""
    error = render_error(sets=["predictionServer.ingressMode=gateway"])
    assert "predictionServer.gatewayParentRefs: Array must have at least 1 items" in error
    lint = helm("lint", str(CHART), "--values", str(MINIMAL),
                "--set", "predictionServer.ingressMode=gateway", check=False)
    assert lint.returncode != 0 and "gatewayParentRefs" in lint.stdout + lint.stderr
    objects = render(sets=["predictionServer.ingressMode=gateway",
                           "predictionServer.gatewayParentRefs[0].name=public-gateway",
                           "predictionServer.gatewayParentRefs[0].namespace=gateways"])
    settings = agent_config(objects)["plugin"]["kubernetes"]
    assert settings["gateway_parent_refs"] == [{"name": "public-gateway",
                                                "namespace": "gateways"}]
