"""Azure Container Registry with Azure Workload Identity: no stored registry password.

The pod's projected service-account token (AZURE_FEDERATED_TOKEN_FILE, written
by the workload-identity webhook with AZURE_CLIENT_ID, AZURE_TENANT_ID and
AZURE_AUTHORITY_HOST) is traded in three steps, each a plain form POST:

1. Entra ID: `{authority}/{tenant}/oauth2/v2.0/token`, client-credentials grant
   with the federated token as client assertion -> an AAD access token for ACR;
2. the registry: `https://{registry}/oauth2/exchange`
   (`grant_type=access_token`) -> an ACR refresh token;
3. the registry's token endpoint (`/oauth2/token`, the realm of its Bearer
   challenge) -> access tokens per scope. The registry client does this step
   itself, with the refresh token as the password of the all-zero user: that
   is how ACR accepts a refresh token on a login.

The token file is re-read on every refresh (kubelet rotates it).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import requests

from agent.errors import RegistryError
from agent.images.auth import Credential, _ExpiringProvider

#: The user name ACR expects with a refresh token as password.
REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"
#: The audience of AAD tokens for ACR's data plane.
ACR_SCOPE = "https://containerregistry.azure.net/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
#: ACR refresh tokens live about 3 hours; without a readable `exp`, assume one.
DEFAULT_LIFETIME = 3600.0
TIMEOUT = 30.0


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, unverified (only to schedule the refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class AcrProvider(_ExpiringProvider):
    """ACR refresh tokens from Azure Workload Identity (the pod's federated identity)."""

    name = "acr"

    def __init__(self, session: requests.Session | None = None) -> None:
        super().__init__()
        self.session = session or requests.Session()

    def _environment(self) -> tuple[str, str, Path, str]:
        names = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise RegistryError(
                f"ACR workload identity needs {', '.join(missing)}: label the agent's pod "
                "azure.workload.identity/use=true and annotate its service account with "
                "azure.workload.identity/client-id (or use a docker config secret instead)"
            )
        authority = os.environ.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY
        return (os.environ["AZURE_CLIENT_ID"], os.environ["AZURE_TENANT_ID"],
                Path(os.environ["AZURE_FEDERATED_TOKEN_FILE"]), authority.rstrip("/") + "/")

    def _post(self, url: str, form: dict[str, str], what: str) -> dict[str, Any]:
        try:
            response = self.session.post(url, data=form, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach {what} at {url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            reason = ""
            try:
                body = response.json()
                reason = f": {body.get('error') or ''} {body.get('error_description') or ''}"
            except ValueError:
                pass
            raise RegistryError(
                f"{what} refused the token request ({response.status_code}{reason.rstrip()})"
            )
        try:
            answer = response.json()
        except ValueError:
            raise RegistryError(f"{what} answered something else than JSON") from None
        if not isinstance(answer, dict):
            raise RegistryError(f"{what} answered something else than a JSON object")
        return answer

    def aad_token(self) -> str:
        """Step 1: the federated service-account token for an AAD access token."""
        client_id, tenant, token_file, authority = self._environment()
        try:
            assertion = token_file.read_text().strip()
        except OSError as exc:
            raise RegistryError(
                f"cannot read AZURE_FEDERATED_TOKEN_FILE {token_file}: {exc.strerror}"
            ) from None
        answer = self._post(f"{authority}{tenant}/oauth2/v2.0/token", {
            "grant_type": "client_credentials", "client_id": client_id, "scope": ACR_SCOPE,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
        }, "Microsoft Entra ID")
        if not answer.get("access_token"):
            raise RegistryError("Microsoft Entra ID sent no access_token")
        return str(answer["access_token"])

    def _fetch(self, registry: str) -> tuple[Credential, float]:
        aad = self.aad_token()
        answer = self._post(f"https://{registry}/oauth2/exchange", {
            "grant_type": "access_token", "service": registry,
            "tenant": os.environ["AZURE_TENANT_ID"], "access_token": aad,
        }, f"the ACR token exchange of {registry}")
        refresh = answer.get("refresh_token")
        if not refresh:
            raise RegistryError(f"the ACR token exchange of {registry} sent no refresh_token")
        expires_at = _jwt_expiry(str(refresh)) or time.time() + DEFAULT_LIFETIME
        return Credential(REFRESH_TOKEN_USER, str(refresh)), expires_at
