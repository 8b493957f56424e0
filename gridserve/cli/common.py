"""What every ``gridserve`` command shares: the exit codes, :class:`UsageError`, the settings
flags (:func:`add_settings`) and their values (:func:`settings_for`), opening the storage the
settings name (:func:`open_storage`) and quieting the client libraries' logs. Nothing here
runs a command."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gridserve.config import Setting, config_path_from, resolve_settings
from gridserve.storage import FallbackStorage, Storage, StorageURIError, from_uri

EXIT_RUNTIME = 1
EXIT_USAGE = 2
DEFAULT_LOCAL_DIR = "gridserve-data"
START_TIMEOUT = 10.0


class UsageError(Exception):
    """A usage problem found after parsing: exit 2 with this message."""


def add_settings(parser: argparse.ArgumentParser, settings: tuple[Setting, ...]) -> None:
    """Adds a flag for each setting (``--x``/``--no-x`` for a boolean) and ``--config``;
    every flag defaults to None, so the environment and the TOML file can still decide."""
    for setting in settings:
        if setting.convert.__name__ == "parse_bool":
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_const",
                const="true",
                default=None,
                help=f"{setting.help} [{setting.env}]",
            )
            parser.add_argument(
                "--no-" + setting.flag[2:],
                dest=setting.name,
                action="store_const",
                const="false",
                help=f"the opposite of {setting.flag}",
            )
            continue
        default = "" if setting.default in (None, ()) else f"; default {setting.default}"
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            action="append" if setting.multiple else "store",
            default=None,
            metavar=setting.metavar or setting.name.upper(),
            help=f"{setting.help} [{setting.env}{default}]",
        )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file ([gridserve] table) [GRIDSERVE_CONFIG]",
    )


def settings_for(
    args: argparse.Namespace, settings: tuple[Setting, ...], environ: dict[str, str]
) -> dict[str, Any]:
    """The values of ``settings``: the flags in ``args``, else ``environ``, else the TOML
    file of ``--config`` (or ``GRIDSERVE_CONFIG``), else the defaults."""
    flags = {s.name: getattr(args, s.name, None) for s in settings}
    return resolve_settings(settings, flags, environ, config_path_from(args.config, environ))


def open_storage(values: dict[str, Any], *, create_default: bool = False) -> Storage:
    """The storage the settings name. A missing local directory is an error unless
    ``--create``, or it is the embedded default and ``create_default`` (serve, put)."""
    uri = values.get("storage") or DEFAULT_LOCAL_DIR
    create = bool(values.get("create")) or (create_default and not values.get("storage"))
    options: dict[str, Any] = {}
    if uri.startswith("s3://"):
        if values.get("s3_endpoint"):
            options["endpoint_url"] = values["s3_endpoint"]
        if values.get("s3_region"):
            options["region_name"] = values["s3_region"]
    elif uri.startswith("mongodb"):
        if values.get("read_preference"):
            options["readPreference"] = values["read_preference"]
        if values.get("file_cache_seconds") is not None:
            options["file_cache_seconds"] = values["file_cache_seconds"]
    try:
        primary = from_uri(uri, bucket=values.get("bucket") or "fs", create=create, **options)
        fallbacks = [
            from_uri(other, create=False) for other in values.get("fallback_storage") or ()
        ]
    except StorageURIError as exc:
        raise UsageError(str(exc)) from exc
    return FallbackStorage(primary, *fallbacks) if fallbacks else primary


def quiet_libraries(values: dict[str, Any]) -> None:
    """The S3 and MongoDB client libraries log at INFO for routine events (credentials found,
    connections): only their warnings show, unless ``--log-level debug``."""
    if str(values.get("log_level", "info")) != "debug":
        for name in ("aiobotocore", "botocore", "boto3", "s3transfer", "pymongo", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)


def short_reason(exc: BaseException) -> str:
    """The first clause of a storage error: the driver's topology dump and timeouts cut off."""
    text = str(exc).splitlines()[0] if str(exc) else f"no answer in {START_TIMEOUT:.0f}s"
    for tail in (", Timeout:", " (configured timeouts:", ", Topology Description:"):
        text = text.split(tail, 1)[0]
    return text
