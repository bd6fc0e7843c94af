"""Configuration precedence, validation and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_settings
from agent.errors import ConfigError


def test_defaults_are_valid() -> None:
    settings = load_settings(environ={})
    assert settings.control_plane.kind == "native"
    assert settings.plugin.name == "filesystem"


def test_precedence_file_then_env_then_command_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "control_plane:\n  url: http://from-file\n  environment_id: file-env\n"
        "runtime:\n  workers: 2\n"
    )
    env = {"MGMT_AGENT_CONTROL_PLANE__URL": "http://from-env",
           "MGMT_AGENT_RUNTIME__WORKERS": "3"}
    settings = load_settings(config, environ=env, overrides=["runtime.workers=5"])
    assert settings.control_plane.url == "http://from-env"  # env beats file
    assert settings.control_plane.environment_id == "file-env"  # file beats default
    assert settings.runtime.workers == 5  # command line beats env


def test_config_file_can_come_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("logging:\n  level: DEBUG\n")
    settings = load_settings(environ={"MGMT_AGENT_CONFIG": str(config)})
    assert settings.logging.level == "DEBUG"


def test_every_bad_key_is_listed_with_its_source(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  workerz: 2\n")
    env = {"MGMT_AGENT_CONTROL_PLANE__POLL_INTERVAL_SECONDS": "-1"}
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=env, overrides=["logging.level=LOUD", "broken"])
    message = str(caught.value)
    assert "4 problem(s)" in message
    assert "runtime.workerz: Extra inputs are not permitted (from file" in message
    assert "control_plane.poll_interval_seconds" in message
    assert "MGMT_AGENT_CONTROL_PLANE__POLL_INTERVAL_SECONDS" in message
    assert "logging.level" in message and "(from --set)" in message
    assert "expected key.path=value" in message


def test_secret_never_shown_in_errors_or_dump(tmp_path: Path) -> None:
    env = {"MGMT_AGENT_CONTROL_PLANE__TOKEN": "s3cr3t-token-value",
           "MGMT_AGENT_CONTROL_PLANE__LEASE_SECONDS": "nope"}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert "s3cr3t" not in str(caught.value)
    settings = load_settings(environ={"MGMT_AGENT_CONTROL_PLANE__TOKEN": "s3cr3t-token-value"})
    assert "s3cr3t" not in str(settings.redacted())
    assert settings.control_plane.api_token() == "s3cr3t-token-value"


def test_token_file_is_reread_so_rotation_works(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    settings = load_settings(environ={"MGMT_AGENT_CONTROL_PLANE__TOKEN_FILE": str(token)})
    assert settings.control_plane.api_token() == "first"
    token.write_text("second\n")
    assert settings.control_plane.api_token() == "second"


def test_config_show_redacts_secrets(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGMT_AGENT_CONTROL_PLANE__TOKEN", "very-secret-token")
    assert main(["config", "show", "--set", "runtime.workers=7"]) == 0
    out = capsys.readouterr().out
    assert "very-secret-token" not in out
    assert "workers: 7" in out
    assert "token: '**********'" in out


def test_config_show_fails_with_exit_2_on_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "runtime.workers=0"]) == 2
    assert "runtime.workers" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["12345678", "p4ss #1 word", "#starts-with-hash", "&anchor",
                                   "yes", "0123", "a: b"])
def test_text_settings_from_env_and_set_are_taken_verbatim(value: str) -> None:
    env = {"MGMT_AGENT_CONTROL_PLANE__TOKEN": value,
           "MGMT_AGENT_CONTROL_PLANE__ENVIRONMENT_ID": "2024"}
    settings = load_settings(environ=env, overrides=[f"control_plane.mlflow.password={value}"])
    assert settings.control_plane.api_token() == value
    assert settings.control_plane.environment_id == "2024"
    password = settings.control_plane.mlflow.password
    assert password is not None and password.get_secret_value() == value


def test_typed_settings_from_env_are_still_parsed() -> None:
    env = {"MGMT_AGENT_RUNTIME__WORKERS": "7", "MGMT_AGENT_HEALTH__ENABLED": "false",
           "MGMT_AGENT_CONTROL_PLANE__MLFLOW__ALIASES": "[production, staging]",
           "MGMT_AGENT_CONTROL_PLANE__MLFLOW__REQUIRED_TAG": "null"}
    settings = load_settings(environ=env)
    assert settings.runtime.workers == 7 and settings.health.enabled is False
    assert settings.control_plane.mlflow.aliases == ["production", "staging"]
    assert settings.control_plane.mlflow.required_tag is None


def test_unreadable_token_file_is_a_config_error_not_a_traceback(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    assert main(["run", "--once", "--set", f"control_plane.token_file={missing}"]) == 2
    assert f"control_plane.token_file: cannot read {missing}" in capsys.readouterr().err


def test_leader_election_timings_are_checked_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides=["runtime.leader_election.enabled=true",
                                             "runtime.leader_election.renew_deadline_seconds=20",
                                             "runtime.workers=0"])
    message = str(caught.value)
    assert "2 problem(s)" in message and "runtime.workers" in message
    assert "runtime.leader_election" in message and "renew_deadline_seconds" in message
