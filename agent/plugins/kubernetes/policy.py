"""Ops' limits on what a deployment's `spec.config` may change about its pods.

Whoever gives orders decides *what* runs (model, image, command); ops decide
*as whom and how contained*: the ServiceAccount (a cloud identity may be bound
to it), whether the pod may drop the non-root rule, which taints it may
tolerate and which node labels it may select. `check_policy` runs in
`validation.validate_spec`, before any cluster call, and a refusal names the
setting (and chart value) ops would change.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.options import DeploymentOptions
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

_SETTING = "plugin.kubernetes.deployment_policy"
_VALUES = "predictionServer.deploymentPolicy"


def _refuse(spec: DeploymentSpec, message: str, setting: str, value: str) -> InvalidActionError:
    return InvalidActionError(
        f"deployment {spec.id}: {message} (ops decide this: {_SETTING}.{setting}, chart value "
        f"{_VALUES}.{value})")


def service_account(options: DeploymentOptions, settings: KubernetesSettings) -> str:
    """The ServiceAccount the deployment's pods run as (`default` when none is named)."""
    return options.service_account_name or settings.service_account_name or "default"


def is_agent_service_account(name: str, settings: KubernetesSettings) -> bool:
    """True when `name`, in the prediction namespace, is one of the agent's own accounts."""
    qualified = f"{settings.namespace}/{name}"
    return any(entry in (name, qualified)
               for entry in settings.deployment_policy.agent_service_accounts)


def _check_service_account(spec: DeploymentSpec, options: DeploymentOptions,
                           settings: KubernetesSettings) -> None:
    policy = settings.deployment_policy
    chosen = service_account(options, settings)
    if is_agent_service_account(chosen, settings):
        if options.service_account_name:
            raise _refuse(spec, f"config.service_account_name {chosen!r} is the agent's own "
                          "ServiceAccount; prediction servers never run as it",
                          "agent_service_accounts", "agentServiceAccounts")
        raise InvalidActionError(
            f"deployment {spec.id}: prediction servers would run as the agent's own "
            f"ServiceAccount {chosen!r} in namespace {settings.namespace}: give them a "
            "ServiceAccount of their own (plugin.kubernetes.service_account_name, chart value "
            "predictionServer.serviceAccountName)")
    name = options.service_account_name
    if name and name != settings.service_account_name and not any(
            fnmatchcase(name, pattern) for pattern in policy.allowed_service_accounts):
        raise _refuse(spec, f"config.service_account_name {name!r} is not allowed (allowed: "
                      f"{', '.join(policy.allowed_service_accounts) or 'none'})",
                      "allowed_service_accounts", "allowedServiceAccounts")


def _relaxes(options: DeploymentOptions, settings: KubernetesSettings,
             ops_profile: ServerProfile, profile: ServerProfile) -> str | None:
    """What the deployment's overrides relax, compared with ops' profile and settings.

    `ops_profile`: the chosen profile as ops defined it; `profile`: with the
    deployment's overrides (the same precedence as `manifests._security`).
    """
    sec = settings.security

    def non_root(chosen: ServerProfile, override: bool | None) -> bool:
        for value in (override, chosen.run_as_non_root, sec.run_as_non_root):
            if value is not None:
                return value
        return True

    if non_root(ops_profile, None) and not non_root(profile, options.run_as_non_root):
        return "run_as_non_root false (config or config.profile)"
    ops_user = sec.run_as_user if sec.run_as_user is not None else ops_profile.run_as_user
    user = sec.run_as_user if sec.run_as_user is not None else profile.run_as_user
    if user == 0 and ops_user != 0:
        return "run_as_user 0 (config.profile)"
    return None


def _check_tolerations(spec: DeploymentSpec, options: DeploymentOptions,
                       settings: KubernetesSettings) -> None:
    rules = settings.deployment_policy.allowed_tolerations
    for toleration in options.tolerations:
        key = str(toleration.get("key") or "")
        effect = toleration.get("effect")
        allowed = any(
            (fnmatchcase(key, rule.key) if key else rule.key == "*")
            and (not rule.effects or (effect is not None and effect in rule.effects))
            for rule in rules)
        if not allowed:
            shown = f"key {key!r}" if key else "without a key (tolerates every taint)"
            raise _refuse(spec, f"config.tolerations: a toleration {shown} with effect "
                          f"{effect or 'any'} is not allowed", "allowed_tolerations",
                          "allowedTolerations")


def _check_node_selector(spec: DeploymentSpec, options: DeploymentOptions,
                         settings: KubernetesSettings) -> None:
    patterns = settings.deployment_policy.allowed_node_selector_keys
    for key in options.node_selector:
        if not any(fnmatchcase(key, pattern) for pattern in patterns):
            raise _refuse(spec, f"config.node_selector: label key {key!r} is not allowed "
                          f"(allowed: {', '.join(patterns) or 'none'})",
                          "allowed_node_selector_keys", "allowedNodeSelectorKeys")


def check_policy(spec: DeploymentSpec, options: DeploymentOptions, settings: KubernetesSettings,
                 ops_profile: ServerProfile, profile: ServerProfile) -> None:
    """Refuse what ops' `deployment_policy` does not allow.

    `ops_profile`: the chosen profile without the deployment's overrides;
    `profile`: with them (`profiles.resolve_profile`).
    """
    _check_service_account(spec, options, settings)
    relaxed = _relaxes(options, settings, ops_profile, profile)
    if relaxed and not settings.deployment_policy.allow_security_relaxation:
        raise _refuse(spec, f"{relaxed} would relax the pod's security context",
                      "allow_security_relaxation", "allowSecurityRelaxation")
    _check_tolerations(spec, options, settings)
    _check_node_selector(spec, options, settings)
