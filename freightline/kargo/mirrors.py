"""Registry mirrors: a worker may reach a registry through a mirror of it.

``FREIGHTLINE_REGISTRY_MIRRORS=public.ecr.aws=127.0.0.1:5000`` makes discovery
list and resolve ``public.ecr.aws/nginx/nginx`` at ``127.0.0.1:5000/nginx/nginx``
while Freight keeps naming the original, so manifests that reference public
images work on an air-gapped (or sandboxed) worker; the webhook receiver maps
a mirror's push notifications back to the original repository. The worker
reads the setting once (``freightline.settings.RegistrySettings``) and hands
the mapping to discovery and the webhook receiver.
"""

from __future__ import annotations

from collections.abc import Mapping


def originals_of(host: str, mirrors: Mapping[str, str]) -> list[str]:
    """The registries that ``host`` mirrors."""
    return [registry for registry, mirror in mirrors.items() if mirror == host]
