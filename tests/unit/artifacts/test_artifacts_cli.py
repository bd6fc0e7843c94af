"""`management-agent fetch-model` through the real command-line entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main


def test_fetch_model_ok_and_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.bin").write_bytes(b"abc")
    allow = ["--set", f"artifacts.file_roots=[{tmp_path}]"]
    assert main(["fetch-model", f"file://{tmp_path / 'src'}", str(tmp_path / "d"), *allow]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest.startswith("sha256:")
    assert main(["fetch-model", f"file://{tmp_path / 'src'}", str(tmp_path / "d2"),
                 "--digest", digest, *allow]) == 0
    assert (tmp_path / "d2" / "m.bin").read_bytes() == b"abc"


def test_fetch_model_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-model", "ftp://x/y", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "ftp://x/y" in err and "unknown scheme" in err
    assert main(["fetch-model", "file:///nope", str(tmp_path / "d"),
                 "--digest", "sha256:" + "0" * 64]) == 1
    assert main(["fetch-model", "file:///nope", str(tmp_path / "d"),
                 "--ca-bundle", str(tmp_path / "missing.pem")]) == 2
    assert not (tmp_path / "d").exists()


def test_credentials_dir_is_read_and_never_printed(tmp_path: Path) -> None:
    creds = tmp_path / "secret"
    creds.mkdir()
    (creds / "AWS_ACCESS_KEY_ID").write_text("AKIDSECRETVALUE")
    (creds / "AWS_SECRET_ACCESS_KEY").write_text("very-secret-value")
    (creds / "AWS_ENDPOINT_URL").write_text("http://127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model", "s3://b/k", str(tmp_path / "d"),
         "--credentials-dir", str(creds), "--set", "artifacts.retries=0",
         "--set", "artifacts.timeout_seconds=2"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "s3://b/k" in proc.stderr
    assert "very-secret-value" not in proc.stderr + proc.stdout
    assert "AKIDSECRETVALUE" not in proc.stderr + proc.stdout


def test_uri_comes_from_exactly_one_place(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch-model", str(tmp_path / "d")]) == 2
    assert "either as an argument or with --uri-from-env" in capsys.readouterr().err
    assert main(["fetch-model", "s3://b/k", str(tmp_path / "d"), "--uri-from-env", "X"]) == 2
    assert "either as an argument or with --uri-from-env" in capsys.readouterr().err
