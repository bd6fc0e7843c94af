"""The artifact clients' trust store: the system roots plus `artifacts.ca_bundle` (agent.tls).

`verify=` is passed per request: REQUESTS_CA_BUNDLE in the environment would
otherwise override `Session.verify` (see docs/security.md).
"""

from __future__ import annotations

from agent.artifacts.settings import ArtifactSettings
from agent.errors import ArtifactError
from agent.tls import verify_for


def verify_setting(settings: ArtifactSettings) -> bool | str:
    """`verify=` for requests/botocore: True (default roots) or the merged bundle's path."""
    return verify_for(settings.ca_bundle, "artifacts.ca_bundle", settings.cache_dir,
                      ArtifactError)
