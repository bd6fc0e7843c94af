"""`control-plane` CLI pieces that need no server: admin token sources, argument errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.controlplane.server.cli import _admin_token
from agent.errors import ConfigError


def test_admin_token_prefers_flag_then_file_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "admin"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("MGMT_AGENT_CP_ADMIN_TOKEN", "from-env")
    assert _admin_token("from-flag", token_file) == "from-flag"
    assert _admin_token(None, token_file) == "from-file"
    assert _admin_token(None, None) == "from-env"
    monkeypatch.setenv("MGMT_AGENT_CP_ADMIN_TOKEN_FILE", str(token_file))
    assert _admin_token(None, None) == "from-file"


def test_missing_admin_token_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MGMT_AGENT_CP_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("MGMT_AGENT_CP_ADMIN_TOKEN_FILE", raising=False)
    with pytest.raises(ConfigError, match="no admin token"):
        _admin_token(None, None)
    with pytest.raises(ConfigError, match="cannot read admin token file"):
        _admin_token(None, Path("/nonexistent/token"))


def test_serve_without_admin_token_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MGMT_AGENT_CP_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("MGMT_AGENT_CP_ADMIN_TOKEN_FILE", raising=False)
    assert main(["control-plane", "serve", "--db", str(tmp_path / "cp.db")]) == 2
    assert "no admin token" in capsys.readouterr().err


def test_deploy_needs_a_model(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MGMT_AGENT_CP_ADMIN_TOKEN", "t")
    monkeypatch.setenv("MGMT_AGENT_CP_URL", "http://127.0.0.1:9")  # never reached
    assert main(["control-plane", "deploy", "d1"]) == 2
    assert "--model-id" in capsys.readouterr().err
