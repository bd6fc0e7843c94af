"""Where a credential may be sent: the endpoints named by its Secret's `host` key.

Apart from the secret formats in `agent.artifacts.credentials` because the
fetchers check it on every request, whatever format the credential came in.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import ArtifactError


@dataclass(frozen=True)
class Binding:
    """The endpoints a credential may be sent to (from the Secret's `host` key)."""

    entries: tuple[tuple[str | None, str, int | None], ...] = ()  # (scheme, host, port)

    @classmethod
    def parse(cls, value: str | None) -> Binding:
        entries = []
        for item in (value or "").replace(",", " ").split():
            scheme = None
            if "://" in item:
                scheme, _, item = item.partition("://")
                scheme = scheme.lower()
            authority = item.split("/", 1)[0].rsplit("@", 1)[-1]
            host, port = authority, None
            if authority.startswith("["):
                host, _, rest = authority[1:].partition("]")
                port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
            elif authority.count(":") == 1:
                name, _, digits = authority.partition(":")
                if not digits.isdigit():
                    raise ArtifactError(f"credentials key 'host': bad port in {item!r}")
                host, port = name, int(digits)
            if not host:
                raise ArtifactError(f"credentials key 'host': no host in {item!r}")
            entries.append((scheme, host.lower().rstrip("."), port))
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, scheme: str | None, host: str, port: int | None) -> bool:
        """Whether host[:port] (over scheme; None: any scheme, e.g. a registry) is bound."""
        host = host.lower().rstrip(".").strip("[]")
        default = {"https": 443, "http": 80}.get((scheme or "").lower())
        for want_scheme, want_host, want_port in self.entries:
            if want_host != host:
                continue
            if want_scheme and scheme and want_scheme != scheme.lower():
                continue
            if want_port is not None and want_port != (port if port is not None else default):
                continue
            return True
        return False

    def describe(self) -> str:
        return ", ".join(
            (f"{s}://" if s else "") + (f"[{h}]" if ":" in h else h) + (f":{p}" if p else "")
            for s, h, p in self.entries
        )


def refuse_unbound(what: str, target: str, binding: Binding, kind: str) -> ArtifactError:
    """The error when a credential would go to an endpoint it was not configured for."""
    if not binding:
        return ArtifactError(
            f"{what}: the credentials secret has a {kind} but no 'host' key saying where it "
            f"may be sent; refusing to send it to {target} (add host: {target} to the secret "
            "if that is where it belongs)"
        )
    return ArtifactError(
        f"{what}: the credentials secret's {kind} is bound to {binding.describe()}, not "
        f"{target}; refusing to send it there (a deployment may not redirect credentials)"
    )
