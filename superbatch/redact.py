"""Keeping secrets out of everything the kit prints or writes.

SAS tokens travel inside URLs, and the Azure SDKs quote URLs, answers of the
services and sometimes connection strings in their exceptions. Every message
that leaves the kit goes through redact() first. Each pattern keeps what
comes before the secret (group 1) and replaces only the secret itself, so a
URL keeps its path and its other query parameters: the user can still read
which blob failed.
"""

import os
import re
from urllib.parse import quote

SECRET_VARIABLES = ("BATCH_ACCOUNT_KEY", "STORAGE_ACCOUNT_KEY", "STORAGE_ACCOUNT_CONNECTION_STRING", "REGISTRY_PASSWORD")

# Characters of base64 and of percent-encoding; a secret's value stops at the
# first other one (&, ;, quotes, <, whitespace), which ends it in a URL, a
# connection string, JSON or XML.
_B64 = r"[A-Za-z0-9+/=%_-]+"

_PATTERNS = [
    # A SAS token's signature, its only secret part. Also percent-encoded
    # (sig%3D...), as when a whole SAS URL is itself a query value, and after
    # XML's &amp; or JSON's \u0026.
    re.compile(r"(?i)((?<![a-z])sig(?:=|%3D))" + _B64),
    # A connection string's account key.
    re.compile(r"(?i)(AccountKey=)" + _B64),
    # A SharedKey Authorization header, as Batch and Storage requests carry...
    re.compile(r"(SharedKey(?:Lite)? [^:\s]+:)[A-Za-z0-9+/=]+"),
    # ...and that request signature as Storage quotes it back in an
    # AuthenticationFailed answer ("The MAC signature found in the HTTP request '...'").
    re.compile(r"(?i)(MAC signature found in the HTTP request ')[^']+"),
    # A Microsoft Entra ID token in an Authorization header, and any bare JWT
    # (header.payload.signature, the header always starting eyJ).
    re.compile(r"(?i)(Bearer\s+)[\w.~+/=-]+"),
    re.compile(r"()\beyJ[\w-]+\.[\w-]+\.[\w-]+"),
    # A password field: a Batch pool's containerRegistries in JSON, docker's
    # auth config as a dict, password=... in a command line or string.
    re.compile(r"""(?i)(["']?password["']?\s*[:=]\s*["']?)[^"'\s,;&}]+"""),
    # A Batch or Storage account key on its own: 64 random bytes in base64,
    # 88 characters ending in ==.
    re.compile(r"((?<![A-Za-z0-9+/]))[A-Za-z0-9+/]{86}=="),
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(r"\1REDACTED", text)
    for value in _secret_values():
        # as given, and percent-encoded as inside a URL (the + / = of a base64 key)
        for form in {value, quote(value, safe="")}:
            text = text.replace(form, "REDACTED")
    return text


def _secret_values() -> list:
    """The secrets in the environment, longest first; the key of a connection
    string on its own too, since a message may quote just the key."""
    values = [os.environ.get(name, "") for name in SECRET_VARIABLES]
    values += re.findall(r"(?i)AccountKey=([^;]+)", os.environ.get("STORAGE_ACCOUNT_CONNECTION_STRING", ""))
    return sorted({value for value in values if len(value) >= 8}, key=len, reverse=True)
