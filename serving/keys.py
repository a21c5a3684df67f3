"""Who may call: tenants are API keys, read from a key file (``tenant key`` per line).

Only SHA-256 digests of the keys leave the process that reads the file, so no key appears in
Ray's deployment state or logs. Without a key file everything is one tenant, and the server
stays on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from storage.urls import is_loopback_host

LOCAL_TENANT = "local"
MIN_KEY_LENGTH = 16
KEY_HINT = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"


def key_digest(key: str) -> str:
    """The SHA-256 hex digest under which a key is known to the server."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: str | Path) -> dict[str, str]:
    """key digest -> tenant, from a file of ``tenant key`` lines (``#`` comments and blank lines skipped).

    A tenant may have several keys (rotation); a key belongs to one tenant.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"key file {path} is not UTF-8 text") from None
    except OSError as error:
        raise OSError(f"cannot read key file {path}: {error.strerror}") from None
    tenants: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{number}: expected `tenant key`, got {len(words)} fields")
        tenant, key = words
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"{path}:{number}: the key of {tenant!r} is shorter than {MIN_KEY_LENGTH} characters; {KEY_HINT}"
            )
        digest = key_digest(key)
        if digest in tenants:
            raise ValueError(f"{path}:{number}: this key is already given to tenant {tenants[digest]!r}")
        tenants[digest] = tenant
    if not tenants:
        raise ValueError(f"key file {path} holds no `tenant key` line")
    return tenants


class TenantKeys:
    """Maps an ``Authorization`` header to its tenant; ``None`` digests: one open tenant (loopback)."""

    def __init__(self, digests: dict[str, str] | None) -> None:
        self.digests = digests

    @property
    def open(self) -> bool:
        return self.digests is None

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of a ``Bearer KEY`` header, or None when the key is missing or unknown."""
        if self.digests is None:
            return LOCAL_TENANT
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = key_digest(key.strip())
        for known, tenant in self.digests.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None

    def tenants(self) -> list[str]:
        return sorted(set(self.digests.values())) if self.digests else [LOCAL_TENANT]


def check_exposure(host: str, keys_file: Path | None, allow_remote: bool) -> None:
    """A non-loopback host needs a key file and --allow-remote: multiplexing must know tenants."""
    if is_loopback_host(host):
        return
    if keys_file is None:
        raise ValueError(f"serving on non-loopback host {host!r} needs --keys FILE (API keys name the tenants)")
    if not allow_remote:
        raise ValueError(f"refusing to serve on non-loopback host {host!r} without --allow-remote")
