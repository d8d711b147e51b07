"""Keeping secrets out of everything the kit prints or writes.

SAS tokens travel inside URLs, and the Azure SDKs quote URLs (and sometimes
connection strings) in their exceptions. Every message that leaves the kit
goes through redact() first.
"""

import os
import re

SECRET_VARIABLES = ("BATCH_ACCOUNT_KEY", "STORAGE_ACCOUNT_KEY", "STORAGE_ACCOUNT_CONNECTION_STRING", "REGISTRY_PASSWORD")

_PATTERNS = [
    re.compile(r"(?i)(\bsig=)[^&\s'\"]+"),  # a SAS signature
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),  # a connection string's key
    re.compile(r"(?i)(SharedKey [^:\s]+:)[A-Za-z0-9+/=]+"),  # an Authorization header
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(r"\1REDACTED", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "REDACTED")
    return text
