"""Secrets hidden from logs, error messages and ``--print-config``.

:func:`mask_uri` hides every credential a storage or endpoint URI can carry: the password of
its user info, and each query option that holds a secret (MongoDB's
``tlsCertificateKeyFilePassword``, the ``AWS_SESSION_TOKEN`` inside
``authMechanismProperties``, S3-style ``secret_access_key`` / ``session_token`` /
``X-Amz-Signature``, anything named ``*password*``, ``*secret*``, ``*token*``). Everything else
is left as written, so the masked URI still says which host and database is meant.
"""

from __future__ import annotations

import re

MASK = "***"

# Option names whose value is a credential (case-insensitive, anywhere in the name).
_SECRET_OPTION = re.compile(r"password|passwd|secret|token|signature|credential", re.IGNORECASE)
# Options holding KEY:VALUE pairs, some of which are secrets.
_PROPERTY_OPTIONS = frozenset({"authmechanismproperties"})


def _mask_properties(value: str) -> str:
    pairs = []
    for pair in value.split(","):
        key, colon, _ = pair.partition(":")
        pairs.append(f"{key}:{MASK}" if colon and _SECRET_OPTION.search(key) else pair)
    return ",".join(pairs)


def _mask_query(query: str) -> str:
    options = []
    for option in query.split("&"):
        name, equals, value = option.partition("=")
        if equals and _SECRET_OPTION.search(name):
            value = MASK
        elif equals and name.lower() in _PROPERTY_OPTIONS:
            # Percent-encoded or not, a pair is KEY:VALUE separated by commas.
            decoded = value.replace("%3A", ":").replace("%3a", ":").replace("%2C", ",")
            value = _mask_properties(decoded.replace("%2c", ","))
        options.append(f"{name}{equals}{value}")
    return "&".join(options)


def mask_uri(uri: str) -> str:
    """``uri`` with its password and every secret-bearing query option replaced by ``***``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    rest, hash_mark, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    if question:
        query = _mask_query(query)
    return f"{scheme}://{authority}{slash}{tail}{question}{query}{hash_mark}{fragment}"
