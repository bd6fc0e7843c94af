"""Dependency layers without servers: what is read from requirements and from a base's layers.

pip itself and the registry are exercised in tests/integration/images/test_images_deps_layer.py
and tests/e2e/test_e2e_serving_deps.py.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from agent.errors import InvalidActionError
from agent.images.base_python import BasePython, _Listing
from agent.images.deps_layer import (
    layer_key,
    missing_requirements,
    read_requirements,
)
from agent.images.layer import DirectorySource, LayerSink
from agent.images.pip_install import pip_reason
from agent.images.settings import DependencySettings, ImageSettings

BASE = BasePython("3.11", "x86_64", "2.36",
                  {"numpy": "2.3.5", "pandas": "2.3.3", "mlflow-skinny": "3.17.2",
                   "xgboost-cpu": "3.2.0"}, "/opt/site")


def _requirements(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "requirements.txt").write_text(text)
    found = read_requirements(DirectorySource(tmp_path), "requirements.txt")
    assert found is not None
    return [str(r) for r in found]


def test_requirements_skip_comments_and_join_continued_lines(tmp_path: Path) -> None:
    text = "# pinned by mlflow\nnumpy==2.3.5  # trailing\n\njmespath \\\n  ==1.1.0\n"
    assert _requirements(tmp_path, text) == ["numpy==2.3.5", "jmespath==1.1.0"]


def test_model_without_requirements_path_has_none(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"x")
    assert read_requirements(DirectorySource(tmp_path), "requirements.txt") is None


@pytest.mark.parametrize(("line", "words"), [
    ("--index-url https://evil.example/simple", "pip options (--index-url) are not accepted"),
    ("-r other.txt", "pip options (-r) are not accepted"),
    ("-e git+https://example/x.git", "pip options (-e) are not accepted"),
    ("pkg @ https://example/pkg-1.0.whl", "URL requirements (pkg @ …) are not accepted"),
    ("numpy===", "line 1"),
])
def test_requirements_that_choose_a_source_or_do_not_parse_are_refused(
        tmp_path: Path, line: str, words: str) -> None:
    with pytest.raises(InvalidActionError, match=r"requirements\.txt") as caught:
        _requirements(tmp_path, line + "\n")
    assert words in str(caught.value)


def test_only_what_the_base_lacks_is_missing(tmp_path: Path) -> None:
    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in (
        "mlflow==3.17.2", "xgboost>=3", "NumPy", "pandas==2.2.0", "JMESPath==1.1.0",
        "markupsafe", "colorama; sys_platform == 'win32'", "tomli; python_version < '3.11'")]
    missing, notes = missing_requirements(requirements, BASE, DependencySettings())
    # mlflow is met by mlflow-skinny, xgboost by xgboost-cpu; markers are the base's
    assert missing == ["jmespath==1.1.0", "markupsafe"]
    assert notes == ["pandas==2.2.0 wanted, the base image's pandas 2.3.3 is used"]


def test_layer_key_follows_requirements_base_and_index_only() -> None:
    settings = ImageSettings()
    key = layer_key(["a==1", "b"], "sha256:base", BASE, settings)
    assert key == layer_key(["a==1", "b"], "sha256:base", BASE, ImageSettings())
    assert key != layer_key(["a==1", "b"], "sha256:other", BASE, settings)
    assert key != layer_key(["a==2", "b"], "sha256:base", BASE, settings)
    other_index = ImageSettings.model_validate(
        {"dependencies": {"index_url": "https://mirror.example/simple"}})
    assert key != layer_key(["a==1", "b"], "sha256:base", BASE, other_index)


def test_pip_reason_keeps_errors_and_hides_index_passwords() -> None:
    output = ("Looking in indexes: https://user:s3cret@pypi.corp/simple\n"
              "ERROR: Could not find a version that satisfies the requirement zz==1.0 "
              "(from versions: none)\nERROR: No matching distribution found for zz==1.0\n"
              "ERROR: see https://user:s3cret@pypi.corp/simple/zz/\n")
    reason = pip_reason(output)
    assert "No matching distribution found for zz==1.0" in reason
    assert "Could not find a version" in reason
    assert "s3cret" not in reason


def test_platform_tags_follow_the_base_glibc() -> None:
    assert BASE.platforms() == ["manylinux_2_36_x86_64", "manylinux2014_x86_64"]
    old = BasePython("3.9", "aarch64", "2.12", {}, "")
    assert old.platforms() == ["manylinux_2_12_aarch64"]


def _layer(entries: dict[str, bytes | None]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r|")


def test_layer_listing_finds_python_distributions_glibc_and_whiteouts() -> None:
    dpkg = (b"Package: libc-bin\nVersion: 9.9\n\n"
            b"Package: libc6\nStatus: ok\nVersion: 2.36-9+deb12u9\n")
    listing = _Listing(["/opt/ml/site"])
    listing.add(_layer({
        "usr/bin/python3.11": b"",
        "usr/lib/python3/dist-packages/six-1.16.0.egg-info": b"",
        "usr/local/lib/python3.11/site-packages/requests-2.32.0.dist-info/": None,
        "opt/ml/site/scikit_learn-1.9.1.dist-info/": None,
        "opt/ml/site/old_thing-1.0.dist-info/": None,
        "opt/elsewhere/hidden-1.0.dist-info/": None,  # not on any Python path
        "var/lib/dpkg/status": dpkg,
    }))
    listing.add(_layer({"opt/ml/site/.wh.old_thing-1.0.dist-info": b""}))
    assert listing.pythons == {"3.11"}
    assert listing.libc6 == "2.36"
    assert sorted(listing.dists.values()) == [
        ("requests", "2.32.0"), ("scikit-learn", "1.9.1"), ("six", "1.16.0")]


def test_uncompressed_layer_has_one_hash_for_diff_id_and_digest() -> None:
    sink = LayerSink(None, "none", None)
    sink.write(b"tar bytes")
    blob, diff = sink.close()
    assert blob == diff == "sha256:" + hashlib.sha256(b"tar bytes").hexdigest()


def test_pip_gets_no_marker_and_markers_are_evaluated_for_the_base() -> None:
    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in (
        'evil; platform_release != " --index-url https://evil.example/simple"',
        "Requests[SOCKS,security]>=2; platform_machine == 'aarch64'",
        "only-new; python_version >= '3.13'", "only-x86; platform_machine == 'x86_64'")]
    missing, _ = missing_requirements(requirements, BASE, DependencySettings())
    # what pip reads is name[extras]specifier only: no marker value can become an option
    assert missing == ["evil", "only-x86"]
    newer_arm = BasePython("3.13", "aarch64", "2.36", {}, "")
    missing, _ = missing_requirements(requirements, newer_arm, DependencySettings())
    assert missing == ["evil", "only-new", "requests[security,socks]>=2"]


@pytest.mark.parametrize("field", ["index_url", "extra_index_urls"])
def test_index_urls_with_a_login_are_refused(field: str) -> None:
    from pydantic import ValidationError

    url = "https://user:s3cret-token@pypi.corp.example/simple"
    with pytest.raises(ValidationError, match="index_credentials_file") as caught:
        DependencySettings.model_validate({field: url if field == "index_url" else [url]})
    assert f"images.dependencies.{field} carries a login" in str(caught.value)


def test_a_huge_dpkg_status_is_not_read_whole() -> None:
    from agent.errors import BuildError
    from agent.images.base_python import MAX_DPKG_BYTES

    status = b"Package: filler\nVersion: 1\n\n" * (MAX_DPKG_BYTES // 27 + 1)
    with pytest.raises(BuildError, match="dpkg status is larger than 4 MiB"):
        _Listing([]).add(_layer({"var/lib/dpkg/status": status}))
