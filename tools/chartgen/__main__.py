"""`tools/gen-chart [--check]`: write (or check) the chart files generated from the settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from agent.config import Settings
from tools.chartgen import readme, schema, settings_map, template, values_doc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "management-agent"
COMMAND = "tools/gen-chart"


def generate(chart_dir: Path = CHART) -> dict[Path, str]:
    """The generated files' paths and contents; ValueError lists what the inputs lack."""
    values_text = (chart_dir / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    base = json.loads((chart_dir / "values.schema.base.json").read_text())
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    settings = settings_map.resolve(Settings, values)
    full_schema = schema.build(settings, values, base)
    docs = values_doc.parse(values_text)
    missing = readme.undocumented(values, docs)
    if missing:
        raise ValueError("values without a `# --` comment:\n" +
                         "\n".join(f"  - {m}" for m in missing))
    return {
        chart_dir / "values.schema.json": json.dumps(full_schema, indent=2) + "\n",
        chart_dir / "templates" / "_settings.tpl": template.render(settings),
        chart_dir / "README.md": readme.render(chart, values, docs, settings, full_schema),
    }


def stale(chart_dir: Path = CHART) -> list[Path]:
    """Generated files whose content on disk differs from what the generator makes."""
    return [path for path, text in generate(chart_dir).items()
            if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a generated file is stale, write nothing")
    args = parser.parse_args(argv)
    try:
        outputs = generate()
    except ValueError as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    changed = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for path in changed:
            print(f"{COMMAND}: {path.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if changed else 0
    for path in changed:
        path.write_text(outputs[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
