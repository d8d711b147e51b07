"""The image a Batch task names: by digest (repo@sha256:...), never by tag.

A node keeps the image it pulled for a tag: after `repo:v1` is pushed again, a
node that pulled it before still runs the old image. A digest names one exact
image, so every task names the image by the digest that --push reported, or
else by the one the registry holds for the tag now (HTTP API v2: a HEAD of the
manifest answers with Docker-Content-Digest). The pool may keep the tag: it
only prefetches.

The journal records which reference each task was sent with (ranges of
indices per reference), for the summary.
"""

import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .ranges import add_range, expand, from_sorted

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# A HEAD must accept every kind of manifest, or a registry answers with a
# converted (older) one whose digest differs from what the nodes pull.
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
TIMEOUT = 15  # seconds per registry request


def is_digest(reference: str) -> bool:
    return "@sha256:" in reference


def split(reference: str) -> tuple:
    """(registry host or None for Docker Hub, repository, tag) of repo[:tag]."""
    first, _, rest = reference.partition("/")
    host = None
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, reference = first, rest
    repository, tag = reference, "latest"
    if ":" in reference.rsplit("/", 1)[-1]:
        repository, _, tag = reference.rpartition(":")
    return host, repository, tag


def resolve(reference: str, username: Optional[str] = None, password: Optional[str] = None,
            registry_server: Optional[str] = None) -> tuple:
    """(repo@sha256:..., None) or (None, why it could not be resolved).

    The login is sent only to the registry it belongs to (registry_server).
    """
    if is_digest(reference):
        return reference, None
    host, repository, tag = split(reference)
    if host is None:
        return None, "it names no registry: set REGISTRY_SERVER, or give --image REGISTRY/NAME:TAG"
    if registry_server and host != registry_server.split("://")[-1].rstrip("/"):
        username = password = None
    scheme = "http" if host.split(":")[0] in LOOPBACK or host.startswith("[::1]") else "https"
    url = f"{scheme}://{host}/v2/{repository}/manifests/{urllib.parse.quote(tag)}"
    try:
        digest = _manifest_digest(url, repository, username, password)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None, f"the registry {host} has no tag {tag!r} of {repository}"
        if error.code in (401, 403):
            return None, f"the registry {host} refused to show it ({error.code}); check REGISTRY_USERNAME and REGISTRY_PASSWORD"
        return None, f"the registry {host} answered {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return None, f"the registry {host} could not be asked ({getattr(error, 'reason', error)})"
    if not digest:
        return None, f"the registry {host} named no digest for it"
    return f"{host}/{repository}@{digest}", None


def _manifest_digest(url: str, repository: str, username, password) -> Optional[str]:
    headers = {"Accept": MANIFEST_TYPES}
    if username:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    try:
        return _head(url, headers)
    except urllib.error.HTTPError as error:
        challenge = error.headers.get("WWW-Authenticate", "") if error.code == 401 else ""
        if not challenge.lower().startswith("bearer "):
            raise
    # A token registry (Azure Container Registry among them): trade the login for a pull token.
    token = _token(_challenge_fields(challenge), repository, headers.get("Authorization"))
    return _head(url, {"Accept": MANIFEST_TYPES, "Authorization": f"Bearer {token}"})


def _head(url: str, headers: dict) -> Optional[str]:
    request = urllib.request.Request(url, headers=headers, method="HEAD")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return answer.headers.get("Docker-Content-Digest")


def _challenge_fields(challenge: str) -> dict:
    fields = {}
    for part in challenge[len("bearer "):].split(","):
        key, _, value = part.strip().partition("=")
        fields[key.lower()] = value.strip('"')
    return fields


def _token(fields: dict, repository: str, authorization: Optional[str]) -> str:
    query = {"service": fields.get("service", ""), "scope": fields.get("scope") or f"repository:{repository}:pull"}
    request = urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")
    if authorization:
        request.add_header("Authorization", authorization)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        body = json.load(answer)
    token = body.get("token") or body.get("access_token")
    if not token:
        raise ValueError("no token in the registry's answer")
    return token


def task_image(image: str, pushed: Optional[str], settings) -> str:
    """The reference tasks name: what --push reported, else the registry's
    digest for the tag, else the tag with a warning that says what may happen."""
    repository = split(image)[1]
    if pushed and split(pushed.split("@")[0])[1] == repository:
        return pushed
    resolved, why = resolve(image, settings.registry_username, settings.registry_password, settings.registry_server)
    if resolved:
        return resolved
    print(f"warning: the image {image} could not be resolved to a digest ({why}); tasks name it by its tag, "
          "so nodes that pulled this tag earlier keep running the old image", file=sys.stderr)
    return image


def record(images: dict, reference: str, indices: list) -> dict:
    """images (reference -> ranges) with these task indices moved to `reference`."""
    taken = set(indices)
    result = {}
    for other, ranges in images.items():
        if other == reference:
            result[other] = ranges
            continue
        kept = [index for index in expand(ranges) if index not in taken]
        if kept:
            result[other] = from_sorted(kept)
    ranges = result.get(reference, [])
    for first, last in from_sorted(sorted(taken)):
        ranges = add_range(ranges, first, last)
    result[reference] = ranges
    return result


def by_index(images: dict) -> dict:
    """reference -> sorted task indices, for the summary."""
    return {reference: expand(ranges) for reference, ranges in images.items()}
