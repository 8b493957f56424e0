"""The daemon's settings: one table, four sources.

Every setting has a flag (``--cache-time``), an environment variable (``GRIDSERVE_CACHE_TIME``)
and a key in the ``--config`` TOML file (``cache_time = 60``, or ``cache-time``). Precedence:
flag > environment > file > default. :func:`resolve_settings` merges them and converts each
value once; :func:`masked` is what ``--print-config`` shows (secrets and URI passwords hidden).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridserve.masking import MASK, mask_uri

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "GRIDSERVE_"
READ_PREFERENCES = (
    "primary",
    "primaryPreferred",
    "secondary",
    "secondaryPreferred",
    "nearest",
)
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting that cannot be used (bad value, unreadable file): a usage error, exit 2."""


def parse_size(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"100M"``, ``"2G"`` (binary multiples) to bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M or 2G)")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(match.group(1)) << (10 * power)


def parse_duration(text: str) -> float:
    """``"90"`` or ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"`` to seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 30m, 24h or 7d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2).lower()]
    seconds = float(match.group(1)) * unit
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text

    return convert


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


def _lines(text: str) -> tuple[str, ...]:
    """Several values, one per line (a repeated flag, a TOML array, an env var's lines)."""
    return tuple(line for line in text.split("\n") if line)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port")
    return value


@dataclass(frozen=True)
class Setting:
    name: str  # python name; the flag is --name-with-dashes
    default: Any
    convert: Callable[[str], Any]
    help: str
    secret: bool = False
    metavar: str | None = None
    multiple: bool = False  # the flag may repeat, TOML takes an array, env one per line

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# Settings of the storage, shared by `serve` and the file tools.
STORAGE_SETTINGS = (
    Setting(
        "storage",
        None,
        str,
        "where files live: mongodb://host/db (GridFS), s3://bucket/prefix, or a directory "
        "(PATH or file:PATH); default for serve: ./gridserve-data",
        metavar="URI",
    ),
    Setting(
        "create",
        False,
        parse_bool,
        "create the --storage directory if it does not exist (else a missing one is an error)",
    ),
    Setting("bucket", "fs", str, "GridFS bucket (default fs)"),
    Setting(
        "s3_endpoint", None, str, "S3-compatible endpoint URL (MinIO, Ceph, R2)", metavar="URL"
    ),
    Setting("s3_region", None, str, "S3 region (default: the AWS configuration)"),
    Setting(
        "read_preference",
        None,
        _choice(READ_PREFERENCES),
        "MongoDB read preference, e.g. secondaryPreferred for read-heavy media",
    ),
    Setting(
        "file_cache_seconds",
        5.0,
        _non_negative_seconds,
        "GridFS: reuse a file document looked up by id for this long; a rename or metadata "
        "edit by another tool shows after at most this delay (default 5; 0 = off)",
        metavar="SECONDS",
    ),
    Setting("log_level", "info", _choice(LOG_LEVELS), "debug, info, warning or error"),
)


def _uri_list(text: str) -> tuple[str, ...]:
    return tuple(text.split())  # a URI never holds whitespace


FALLBACK_STORAGE = Setting(
    "fallback_storage",
    (),
    _uri_list,
    "storage URI read when a file is not in --storage (repeat for more, tried in order; "
    "read-only; in the environment, one URI per line or separated by spaces)",
    metavar="URI",
    multiple=True,
)

SERVE_SETTINGS = (
    Setting("address", "127.0.0.1", str, "address to listen on (default 127.0.0.1)"),
    Setting("port", 8888, _port, "port to listen on (default 8888)"),
    Setting("prefix", "/fs", str, "URL prefix of the files (default /fs)"),
    Setting("processes", 1, _non_negative, "processes to pre-fork; 0 = one per core (default 1)"),
    Setting(
        "loop",
        None,
        _choice(("uvloop", "asyncio")),
        "event loop: uvloop or asyncio (default: uvloop when installed, pip install "
        "gridserve[fast])",
    ),
    Setting("cache_time", 0, _non_negative, "Cache-Control max-age in seconds (default 0: none)"),
    Setting(
        "cors_origin",
        None,
        str,
        "allow players on this origin (or *) to fetch files: CORS, exposing Content-Range, "
        "Accept-Ranges, Content-Length, ETag",
        metavar="ORIGIN",
    ),
    Setting("upload_token", None, str, "bearer token that allows uploads and deletes", True),
    Setting(
        "signing_key",
        None,
        _lines,
        "key for signed URLs (gridserve sign); give it twice to rotate: the first signs, both "
        "verify",
        True,
        multiple=True,
    ),
    Setting("require_signed_reads", False, parse_bool, "reads and listings need a signed URL"),
    Setting(
        "max_upload_size", None, parse_size, "largest upload accepted, e.g. 2G", metavar="SIZE"
    ),
    Setting("access_log", None, str, "access log file in combined format, or - for stderr"),
    Setting("log_file", None, str, "log to this file instead of stderr (SIGHUP reopens it)"),
    Setting("ui", None, parse_bool, "serve the media page at / (default: on for local default)"),
    Setting(
        "xheaders",
        False,
        parse_bool,
        "trust X-Real-Ip / X-Forwarded-For / X-Forwarded-Proto from a reverse proxy (nginx), so "
        "logs and the ACL see the client's address; only when the proxy alone can connect",
    ),
    Setting("shutdown_timeout", 30, _non_negative, "seconds in-flight responses get at shutdown"),
    Setting(
        "send_buffer",
        512 * 1024,
        parse_size,
        "kernel send buffer per stream (default 512K; 0: the kernel's autotuning): what a player "
        "that seeks away discards, and the storage read for nothing",
        metavar="SIZE",
    ),
    Setting(
        "accel_redirect",
        None,
        str,
        "behind nginx: answer reads of a local directory with X-Accel-Redirect to this internal "
        "location (e.g. /_files/), after the ACL, so nginx sends the bytes (deploy/nginx.conf)",
        metavar="PREFIX",
    ),
    Setting(
        "s3_redirect",
        0,
        _non_negative,
        "S3 storage: answer reads with a 307 to a presigned URL valid this many seconds, after "
        "the ACL (never past the request's own signature; not for HTML, SVG, XML); 0: off",
        metavar="SECONDS",
    ),
    Setting(
        "chunk_cache",
        256 * 1024 * 1024,
        parse_size,
        "memory for a cache of storage chunks shared by all requests, per process (GridFS, S3), "
        "e.g. 256M; 0 = off (default 256M)",
        metavar="SIZE",
    ),
    Setting(
        "faststart",
        False,
        parse_bool,
        "rewrite MP4/MOV uploads whose moov comes after mdat so it comes first, before they are "
        "stored (without it they are only flagged: metadata.media.faststart false)",
    ),
    Setting(
        "media_facts",
        True,
        parse_bool,
        "probe uploads with ffprobe (duration, codecs, size) and make posters, in the "
        "background (default on; off without ffprobe)",
    ),
    Setting("send_timeout", 60, _positive, "drop a client that takes no data for this long (s)"),
    Setting("idle_timeout", 60, _positive, "close keep-alive connections idle this long (s)"),
    Setting(
        "linger_seconds",
        10.0,
        _non_negative_seconds,
        "after refusing an upload, read and discard its body this long so the client reads "
        "the refusal (default 10; 0 = close at once)",
        metavar="SECONDS",
    ),
    Setting(
        "linger_bytes",
        32 * 1024 * 1024,
        parse_size,
        "... and at most this much of it (default 32M)",
        metavar="SIZE",
    ),
    Setting(
        "upload_expiry",
        86400.0,
        parse_duration,
        "an unfinished resumable (tus) upload is removed this long after its last request "
        "(default 24h; e.g. 3600, 30m, 7d)",
        metavar="DURATION",
    ),
    Setting(
        "sweep_interval",
        3600.0,
        _non_negative_seconds,
        "look for what crashed uploads left behind at startup and this often (default 3600; "
        "0 = never)",
        metavar="SECONDS",
    ),
    Setting(
        "sweep_grace",
        86400.0,
        _non_negative_seconds,
        "the sweep deletes only leftovers older than this (default 86400: a day)",
        metavar="SECONDS",
    ),
)

ALL_SETTINGS = (*STORAGE_SETTINGS, FALLBACK_STORAGE, *SERVE_SETTINGS)
SECRETS = {s.name for s in ALL_SETTINGS if s.secret}
URI_SETTINGS = {"storage", "s3_endpoint"}


def _refuse_placeholder(setting: Setting, text: str, source: str) -> None:
    """A secret that is the ``***`` ``--print-config`` printed in its place would silently
    become the secret (anyone could send ``Bearer ***``): refused, saying where the real one
    goes."""
    if any(line.strip() == MASK for line in text.splitlines() or [text]):
        raise ConfigError(
            f"{source}: {setting.name} is {MASK!r}, the placeholder --print-config prints "
            f"instead of the secret; put the real value in the environment variable "
            f"{setting.env} (for systemd: /etc/gridserve/gridserve.env, mode 600) or in a "
            f"root-only config file (chmod 600), or remove the line"
        )


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("gridserve", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [gridserve] must be a table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def resolve_settings(
    settings: tuple[Setting, ...],
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """Merges flag > environment > file > default for each setting, converting each value.

    ``flags`` holds the parsed command line, None where a flag was not given.
    """
    from_file = read_config_file(config_file) if config_file else {}
    known = {s.name for s in ALL_SETTINGS}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for setting in settings:
        raw: Any
        if flags.get(setting.name) is not None:
            raw, source = flags[setting.name], setting.flag
        elif setting.env in environ:
            raw, source = environ[setting.env], setting.env
        elif setting.name in from_file:
            raw, source = from_file[setting.name], f"{config_file}: {setting.name}"
        else:
            values[setting.name] = setting.default
            continue
        if isinstance(raw, list) and setting.multiple:
            raw = "\n".join(str(item) for item in raw)
        try:
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if setting.secret:
                _refuse_placeholder(setting, text, source)
            values[setting.name] = setting.convert(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return values


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with secrets shown as ``***`` and credentials in URIs masked
    (see :func:`gridserve.masking.mask_uri`)."""
    shown: dict[str, Any] = {}
    for name, value in values.items():
        if name in SECRETS and value:
            shown[name] = MASK
        elif name in URI_SETTINGS and isinstance(value, str):
            shown[name] = mask_uri(value)
        elif name == "fallback_storage" and isinstance(value, tuple):
            shown[name] = tuple(mask_uri(uri) for uri in value)
        else:
            shown[name] = value
    return shown


def render_toml(values: Mapping[str, Any]) -> str:
    """``values`` as a ``[gridserve]`` TOML table that ``--config`` loads back to the same
    values (settings that are not set appear as comments)."""
    lines = ["[gridserve]"]
    for name, value in values.items():
        if value is None:
            lines.append(f"# {name} =  (not set)")
        elif isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{name} = {value!r}")
        elif isinstance(value, tuple):
            items = ", ".join(_toml_string(item) for item in value)
            lines.append(f"{name} = [{items}]")
        else:
            lines.append(f"{name} = {_toml_string(value)}")
    return "\n".join(lines) + "\n"


def _toml_string(value: Any) -> str:
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def config_path_from(argv_value: str | None, environ: Mapping[str, str]) -> Path | None:
    value = argv_value or environ.get(ENV_PREFIX + "CONFIG")
    return Path(value) if value else None
