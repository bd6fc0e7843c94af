"""The chart files generated from the agent's settings (tools/gen-chart) are current.

values.schema.json, templates/_settings.tpl and README.md are derived from
agent/config.py's Settings and values.yaml; editing either without regenerating fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.chartgen.__main__ import CHART, generate, stale


def test_generated_chart_files_are_current() -> None:
    outdated = [str(path.relative_to(CHART)) for path in stale()]
    assert outdated == [], f"stale generated chart files {outdated}: run tools/gen-chart"


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    return copy


def test_edited_readme_counts_as_stale(chart_copy: Path) -> None:
    readme = chart_copy / "README.md"
    readme.write_text(readme.read_text() + "hand edit\n")
    assert stale(chart_copy) == [readme]


LEASE_DOC = "  # -- Lease taken on a claimed action, seconds (renewed while the action runs).\n"


@pytest.mark.parametrize(("old", "new", "message"), [
    (LEASE_DOC + "  leaseSeconds: 120\n", "",  # a setting without its value
     r"control_plane\.lease_seconds: no value 'controlPlane\.leaseSeconds' in values\.yaml: "
     r"add it with a `# --` comment"),
    ("  # -- Seconds between two polls for new actions.\n", "",  # a value without its doc
     r"values without a `# --` comment:\n  - controlPlane\.pollIntervalSeconds"),
    ("  workers: 4\n", "  workers: 4\n  # -- A typo.\n  wokers: 4\n",  # no setting, no schema
     r"agent\.wokers: neither an agent setting"),
], ids=["setting-without-value", "value-without-doc", "value-without-setting"])
def test_generator_names_what_is_missing_and_the_fix(chart_copy: Path, old: str, new: str,
                                                     message: str) -> None:
    values = chart_copy / "values.yaml"
    text = values.read_text()
    assert old in text
    values.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=message):
        generate(chart_copy)


def test_schema_descriptions_carry_the_settings_units() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    lease = schema["properties"]["controlPlane"]["properties"]["leaseSeconds"]
    assert "seconds" in lease["description"]
    assert lease["$comment"].startswith("agent setting control_plane.lease_seconds")


def test_every_setting_has_a_description_with_its_unit() -> None:
    from pydantic import BaseModel

    from agent.config import Settings

    def leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
        found = []
        for name, info in model.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                found += leaves(info.annotation, f"{prefix}{name}.")
            else:
                found.append((f"{prefix}{name}", info.description or ""))
        return found

    units = {"_seconds": "second", "_bytes": "byte"}
    problems = [path for path, text in leaves(Settings)
                if not text or any(path.endswith(suffix) and unit not in text.lower()
                                   for suffix, unit in units.items())]
    assert problems == [], f"settings without a description (with unit): {problems}"
