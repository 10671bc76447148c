"""Registry mirrors: a worker may reach a registry through a mirror of it.

``FREIGHTLINE_REGISTRY_MIRRORS=public.ecr.aws=127.0.0.1:5000`` makes discovery
list and resolve ``public.ecr.aws/nginx/nginx`` at ``127.0.0.1:5000/nginx/nginx``
while Freight keeps naming the original, so manifests that reference public
images work on an air-gapped (or sandboxed) worker; the webhook receiver maps
a mirror's push notifications back to the original repository.
"""

from __future__ import annotations

import os

from freightline.errors import ConfigError

REGISTRY_MIRRORS_ENV = "FREIGHTLINE_REGISTRY_MIRRORS"
"""Worker setting: ``registry=mirror[,registry=mirror...]``, e.g. ``public.ecr.aws=127.0.0.1:5000``."""


def registry_mirrors(text: str | None = None) -> dict[str, str]:
    """The worker's registry mirrors: discovery asks the mirror, Freight names the original.

    This is how an air-gapped (or sandboxed) worker serves manifests that
    name public images, the Kargo quickstart's ``public.ecr.aws/nginx/nginx``
    among them. Raises ConfigError naming the bad entry.
    """
    text = os.environ.get(REGISTRY_MIRRORS_ENV, "") if text is None else text
    mirrors = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        registry, sep, mirror = entry.partition("=")
        if not sep or not registry.strip() or not mirror.strip():
            raise ConfigError(f"{REGISTRY_MIRRORS_ENV}: {entry!r} is not registry=mirror")
        mirrors[registry.strip()] = mirror.strip()
    return mirrors


def originals_of(host: str, mirrors: dict[str, str]) -> list[str]:
    """The registries that ``host`` mirrors."""
    return [registry for registry, mirror in mirrors.items() if mirror == host]
