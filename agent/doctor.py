"""`management-agent doctor`: preflight checks that say, in plain words, what to fix.

Run it where the agent runs (the chart's `helm test` hook does) with the same
settings: it checks the control plane and the token, the service account's
permissions, the ingress class, a push to the generated image repository, the
base server images, the ECR repository and, given `--model-uri`, the artifact
store. Each check answers OK, FAIL or SKIP with a hint; any FAIL makes the
exit code 1 (2 when the settings themselves are invalid).

The checks live in `agent.doctor_checks`, the permission list in `agent.rbac`;
both are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from agent.doctor_checks import (
    Check,
    CheckResult,
    Context,
    Skip,
    Status,
    check_artifact_store,
    check_base_image,
    check_control_plane,
    check_ecr_repository,
    check_ingress_class,
    check_permissions,
    check_registry_push,
    control_plane_fix,
    registry_fix,
)
from agent.errors import AgentError, ConfigError
from agent.rbac import CONDITIONS, REQUIRED_PERMISSIONS, Permission, required_permissions

__all__ = [
    "CHECKS", "CONDITIONS", "REQUIRED_PERMISSIONS", "Check", "CheckResult", "Context",
    "Permission", "Skip", "Status", "check_artifact_store", "check_base_image",
    "check_control_plane", "check_ecr_repository", "check_ingress_class", "check_permissions",
    "check_registry_push", "exit_code", "format_table", "main", "required_permissions",
    "run_checks",
]


CHECKS: dict[str, tuple[Check, Callable[[Context, Exception], str]]] = {
    "control-plane": (check_control_plane, control_plane_fix),
    "permissions": (check_permissions, lambda c, e: (
        "check the agent's service account and that the Kubernetes API is reachable")),
    "ingress-class": (check_ingress_class, lambda c, e: "check predictionServer.ingressClassName"),
    "registry-push": (check_registry_push, lambda c, e: registry_fix(c)),
    "base-image": (check_base_image, lambda c, e: (
        "check the server profile's image, imageBuilder.baseImageSecretName for a private "
        "registry, and that the registry is reachable")),
    "ecr-repository": (check_ecr_repository, lambda c, e: (
        "check the IRSA role (ecr:DescribeRepositories, ecr:CreateRepository) and the region")),
    "artifact-store": (check_artifact_store, lambda c, e: (
        "check the model URI, artifacts.defaultCredentialsSecret (or the deployment's secret), "
        "artifacts.s3EndpointUrl and artifacts.caBundle")),
}


def run_checks(ctx: Context, skip: Sequence[str] = ()) -> list[CheckResult]:
    """Run every check (a crash in one is that check's FAIL, never the doctor's)."""
    results: list[CheckResult] = []
    for name, (check, fix) in CHECKS.items():
        if name in skip:
            results.append(CheckResult(name, "SKIP", "skipped with --skip"))
            continue
        try:
            results.append(check(ctx))
        except Skip as exc:
            results.append(CheckResult(name, "SKIP", str(exc)))
        except Exception as exc:  # every failure is reported, none ends the run
            detail = str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(name, "FAIL", detail, fix(ctx, exc)))
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table, then one `fix:` line per failed check."""
    width = max([len("CHECK"), *(len(r.name) for r in results)])
    lines = [f"{'CHECK':<{width}}  {'RESULT':<6}  DETAIL"]
    for result in results:
        lines.append(f"{result.name:<{width}}  {result.status:<6}  {result.detail}")
        if result.status == "FAIL" and result.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {result.fix}")
    failed = sum(r.status == "FAIL" for r in results)
    lines.append("")
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines)


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(r.status == "FAIL" for r in results) else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options: the same settings options as `run`, plus its own."""
    from agent.cli import _add_settings_arguments

    _add_settings_arguments(parser)
    parser.add_argument("--model-uri", help="also fetch this model to check the artifact store")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(CHECKS),
                        metavar="CHECK", help=f"skip a check (repeatable): {', '.join(CHECKS)}")


def main(args: argparse.Namespace) -> int:
    """Load the settings, run the checks, print them; 0 all good, 1 a check failed, 2 bad config."""
    from agent.cli import _settings_overrides
    from agent.config import load_settings

    try:
        settings = load_settings(args.config, overrides=_settings_overrides(args))
    except ConfigError as exc:
        results = [CheckResult("config", "FAIL", str(exc),
                               "fix the listed settings (chart values or --set)")]
        _print(results, args.json)
        return 2
    ctx = Context(settings, args.model_uri)
    try:
        results = [CheckResult("config", "OK", "settings are valid"),
                   *run_checks(ctx, args.skip)]
    finally:
        ctx.close()
    _print(results, args.json)
    return exit_code(results)


def _print(results: Sequence[CheckResult], as_json: bool) -> None:
    if as_json:
        data: dict[str, Any] = {"ok": exit_code(results) == 0,
                                "checks": [asdict(r) for r in results]}
        print(json.dumps(data, indent=2))
    else:
        print(format_table(results))
    sys.stdout.flush()
