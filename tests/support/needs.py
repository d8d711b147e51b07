"""What a test does when something it needs outside the project is missing.

The one rule, for every test that needs a Docker engine, a base image, a
registry, Azurite or the Batch REST API description:

    under CI (CI=true; .ci/run sets it)  always a failure: CI provides all of
                                         them, and a skip would hide a broken
                                         set-up behind a green run;
    outside CI                           a skip, with the reason, only when the
                                         Docker engine or the registry is
                                         absent (a laptop may have neither) or
                                         the API description is (reference
                                         data kept outside the repository);
                                         anything else is a failure.

A registry that refuses the login is not "absent": it is always a failure.
Azurite is always a failure: `make test` installs it.

tests/conftest.py also ends a CI session with a failure if anything skipped,
so a skip added elsewhere without this module still cannot stay green.
"""

from __future__ import annotations

import base64
import enum
import os
import urllib.error
import urllib.request
from typing import NoReturn

import pytest


class Need(enum.Enum):
    ENGINE = "a Docker engine"
    BASE_IMAGE = "the base image"
    REGISTRY = "a registry"
    AZURITE = "Azurite"
    API_DESCRIPTION = "the Batch REST API description"
    R = "R with jsonlite (Rscript)"
    CHROMIUM = "Chromium"


# What may be skipped outside CI; everything else fails everywhere.
SKIPPABLE_OUTSIDE_CI = frozenset({Need.ENGINE, Need.REGISTRY, Need.API_DESCRIPTION, Need.R, Need.CHROMIUM})

# Where each comes from, for the failure message.
_PROVIDER = {
    Need.ENGINE: ".ci/setup-docker.sh starts one",
    Need.BASE_IMAGE: ".ci/setup-docker.sh builds it",
    Need.REGISTRY: ".ci/setup-docker.sh starts one",
    Need.AZURITE: "`make test` installs it (npm ci)",
    Need.API_DESCRIPTION: "set BATCH_API_SPEC to the path of BatchService.json",
    Need.R: ".ci/setup-docker.sh installs r-base-core and r-cran-jsonlite",
    Need.CHROMIUM: ".ci/run installs Debian's chromium package",
}


def in_ci() -> bool:
    """True when CI is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(need: Need, reason: str) -> NoReturn:
    """Skip or fail the current test (or fixture) because ``need`` is missing."""
    if need in SKIPPABLE_OUTSIDE_CI and not in_ci():
        pytest.skip(reason)
    where = "CI must provide it" if in_ci() else "only a missing engine or registry may skip"
    pytest.fail(f"{reason} ({where}; {_PROVIDER[need]})", pytrace=False)


def refused(what: str, error) -> NoReturn:
    """A service that is there but said no (a refused login): never a skip."""
    pytest.fail(f"{what} refused: {error}", pytrace=False)


def check_registry(server: str, username: str, password: str) -> None:
    """Missing (a skip outside CI) when nothing answers at ``server``; a
    failure when it asks for no login (the tests are about credentials) or
    refuses this one."""
    try:
        urllib.request.urlopen(f"http://{server}/v2/", timeout=5)
        answered = 200
    except urllib.error.HTTPError as error:
        answered = error.code
    except OSError as error:
        missing(Need.REGISTRY, f"no registry answers at {server} ({error})")
    if answered != 401:
        pytest.fail(f"the registry at {server} asks for no login (HTTP {answered}); "
                    "the tests need one that does", pytrace=False)
    request = urllib.request.Request(f"http://{server}/v2/")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except urllib.error.HTTPError as error:
        refused(f"the login of {username} at the registry {server}", f"HTTP {error.code}")
