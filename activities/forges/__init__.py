"""Forge clients: pull (merge) requests on GitHub, GitLab, Gitea/Forgejo, Bitbucket Cloud and
Azure DevOps.

:func:`forge_for` picks the provider as Kargo v1.11 does (``pkg/gitprovider``): by name
(``github``, ``gitlab``, ``gitea``, ``bitbucket``, ``azure``) when the step says, else by the
repository URL's host: a host containing ``github`` (or ending ``.ghe.com``) is GitHub,
``gitlab`` GitLab, ``gitea`` Gitea, exactly ``bitbucket.org`` Bitbucket Cloud, exactly
``dev.azure.com`` (or ending ``visualstudio.com``) Azure DevOps. The API base comes from the
repository URL as Kargo's clients derive it:

* GitHub: ``https://api.github.com`` for github.com, else ``{scheme}://{host}/api/v3``
  (GitHub Enterprise Server);
* GitLab: ``https://gitlab.com/api/v4``, else ``{scheme}://{host}/api/v4``;
* Gitea/Forgejo: ``{scheme}://{host}/api/v1``;
* Bitbucket Cloud: ``https://api.bitbucket.org/2.0`` whatever the host (Kargo's constant);
* Azure DevOps: ``https://dev.azure.com`` (the organization is the first path segment; the
  legacy ``{org}.visualstudio.com`` host's organization moves there, as in Kargo);

(the scheme is the URL's when it is http or https, else https; an SSH URL's port is git's,
not the API's, so it is dropped). The worker's git credential for the repository may
override it with an ``apiURL`` value, and so may the caller (``api_base_url``).

The token is the password of the worker's git credential for the repository (as in
Kargo; GitHub and Bitbucket take it as a Bearer token, Azure DevOps as HTTP Basic with no
user name), or a GitHub App's installation token
(minted and cached by :mod:`activities.github_app`). ``docs/pull-requests.md`` is the user's guide.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from activities import github_app
from activities.forges.azure import AzureDevOps
from activities.forges.base import Forge, ForgeHttp
from activities.forges.bitbucket import BitbucketCloud
from activities.forges.gitea import Gitea
from activities.forges.github import GitHub
from activities.forges.gitlab import GitLab
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.credentials import CredentialStore

__all__ = ["PROVIDERS", "Forge", "detect_provider", "forge_for", "parse_repo_url"]

PROVIDERS = ("github", "gitlab", "gitea", "bitbucket", "azure")
BITBUCKET_API = "https://api.bitbucket.org/2.0"
AZURE_API = "https://dev.azure.com"

_SCP = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?P<path>[^/].*)$")


def parse_repo_url(repo_url: str) -> tuple[str, str, str]:
    """``(scheme, host, path)`` of a git URL (https, http, ssh or scp-like ``git@host:path``);
    the path without its leading slash and ``.git``, its case kept."""
    text = repo_url.strip()
    if "://" in text:
        parts = urlsplit(text)
        host = parts.netloc.rsplit("@", 1)[-1]
        scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
        if parts.scheme not in ("http", "https"):
            host = host.split(":", 1)[0]
        path = parts.path
    else:
        match = _SCP.match(text)
        if match is None:
            raise ConfigError(f"repoURL {repo_url!r}: not a URL a forge serves")
        scheme, host, path = "https", match["host"], match["path"]
    path = path.strip("/").removesuffix(".git")
    if not host or not path:
        raise ConfigError(f"repoURL {repo_url!r}: no host or repository path")
    return scheme, host, path


def detect_provider(repo_url: str) -> str | None:
    """The provider Kargo would pick for ``repo_url`` by its host, or None."""
    host = parse_repo_url(repo_url)[1].lower()
    if "github" in host or host.endswith(".ghe.com"):
        return "github"
    if "gitlab" in host:
        return "gitlab"
    if "gitea" in host:
        return "gitea"
    if host == "bitbucket.org":
        return "bitbucket"
    if host == "dev.azure.com" or host.endswith("visualstudio.com"):
        return "azure"
    return None


def default_api_url(provider: str, scheme: str, host: str) -> str:
    bare = host.lower()
    if provider == "github":
        return (
            "https://api.github.com"
            if bare in ("github.com", "www.github.com")
            else (f"{scheme}://{host}/api/v3")
        )
    if provider == "gitlab":
        return f"{scheme}://{host}/api/v4"
    if provider == "bitbucket":
        return BITBUCKET_API
    if provider == "azure":
        return AZURE_API
    return f"{scheme}://{host}/api/v1"


def forge_for(
    repo_url: str,
    provider: str | None,
    *,
    credentials: CredentialStore,
    http: httpx.AsyncClient | None = None,
    api_base_url: str | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    tokens: github_app.InstallationTokens | None = None,
) -> Forge:
    """The forge client for ``repo_url`` (see the module's docstring for how it is chosen)."""
    chosen = provider or detect_provider(repo_url)
    if chosen is None:
        raise ConfigError(
            f"repoURL {repo_url}: cannot tell which forge serves it; set provider "
            f"({', '.join(PROVIDERS)})"
        )
    if chosen not in PROVIDERS:
        raise ConfigError(f"provider {chosen!r}: not one of {', '.join(PROVIDERS)}")
    scheme, host, path = parse_repo_url(repo_url)
    creds = credentials.git(repo_url)
    if creds is None or not (creds.password or creds.github_app):
        raise CredentialError(
            f"{repo_url}: the worker has no git credential (a token as its password) for this "
            "repository; pull requests need one (docs/pull-requests.md)"
        )
    entry = credentials.find("git", repo_url)
    api_url = (
        api_base_url
        or (entry.values.get("apiURL") if entry is not None else None)
        or (creds.github_app.api_url if creds.github_app is not None else None)
        or default_api_url(chosen, scheme, host)
    )

    def token() -> str:
        # A GitHub App's installation token is minted (a blocking HTTPS call, once an hour
        # per installation at most: cached) on the first request, off the event loop.
        return github_app.resolve(creds, tokens).password if creds.github_app else creds.password

    def client(provider: str, header: str, extra: dict[str, str]) -> ForgeHttp:
        return ForgeHttp(
            provider=provider,
            api_url=api_url,
            repository=path,
            headers=extra,
            auth=lambda: {header: _auth_value(provider, token())},
            http=http,
            sleep=sleep,
        )

    parts = path.split("/")
    if chosen == "azure":
        return AzureDevOps(
            client("azure", "Authorization", {}), *_azure_repository(repo_url, host, parts)
        )
    if chosen == "gitlab":
        return GitLab(client("gitlab", "PRIVATE-TOKEN", {}), path)
    if len(parts) != 2:
        raise ConfigError(f"repoURL {repo_url}: a {chosen} repository is OWNER/NAME")
    if chosen == "bitbucket":
        return BitbucketCloud(client("bitbucket", "Authorization", {}), parts[0], parts[1])
    if chosen == "github":
        github_headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        return GitHub(client("github", "Authorization", github_headers), parts[0], parts[1])
    return Gitea(client("gitea", "Authorization", {}), parts[0], parts[1])


def _azure_repository(repo_url: str, host: str, parts: list[str]) -> tuple[str, str, str]:
    """``(org, project, repo)`` of ``{org}/{project}/_git/{repo}`` on dev.azure.com (or any host
    named ``provider: azure``), or ``{project}/_git/{repo}`` on ``{org}.visualstudio.com``."""
    if host.lower().endswith("visualstudio.com"):
        parts = [host.split(".", 1)[0], *parts]
    if len(parts) != 4 or parts[2] != "_git":
        raise ConfigError(
            f"repoURL {repo_url}: an Azure DevOps repository is "
            "https://dev.azure.com/ORG/PROJECT/_git/REPO"
        )
    return parts[0], parts[1], parts[3]


def _auth_value(provider: str, token: str) -> str:
    if provider in ("github", "bitbucket"):
        return f"Bearer {token}"
    if provider == "gitea":
        return f"token {token}"
    if provider == "azure":
        # The SDK's PAT connection: Basic with an empty user name.
        return "Basic " + base64.b64encode(f":{token}".encode()).decode()
    return token
