"""``gridserve sign``: print a signed URL (:mod:`gridserve.signing` plans it, :mod:`gridserve.acl`
signs it). Needs no storage: only the signing key and the server's URL prefix, from a flag,
the environment or ``--config``.
"""

from __future__ import annotations

import argparse
from typing import Any

from gridserve.acl import sign_path
from gridserve.cli.common import UsageError, settings_for
from gridserve.config import SERVE_SETTINGS, parse_size
from gridserve.signing import DEFAULT_TTL, plan_signed_request


def add_parser(commands: Any) -> None:
    """Adds ``sign`` to the ``gridserve`` subcommands."""
    sign = commands.add_parser(
        "sign",
        help="print a signed URL",
        description="Print a URL that grants exactly one request: GET/HEAD of a file or a "
        "listing, or a scoped upload (PUT of one name, up to --max-size bytes), until --ttl "
        "runs out. Every query parameter is signed: the holder can change none.",
    )
    sign.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="the raw name path, e.g. '/fs/my show/ep 1.webm' (spaces, ?, #, %% are part of "
        "the name); a trailing / signs the folder's listing",
    )
    sign.add_argument("--url", metavar="PATH?QUERY", help="an already encoded path and query")
    sign.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL, metavar="SECONDS", help="default 3600"
    )
    sign.add_argument("--method", default="GET", help="GET (default), HEAD (signed as GET), PUT")
    sign.add_argument("--rev", type=int, default=None, help="a revision (-1 newest, 0 oldest)")
    sign.add_argument("--download", action="store_true", help="served as an attachment")
    sign.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="listing parameter: prefix, after or limit (repeatable)",
    )
    sign.add_argument("--max-size", metavar="SIZE", help="PUT: the most bytes, e.g. 50M")
    sign.add_argument("--base-url", default="", help="prepended to the path, e.g. https://cdn")
    sign.add_argument(
        "--signing-key",
        dest="signing_key",
        action="append",
        default=None,
        metavar="KEY",
        help="[GRIDSERVE_SIGNING_KEY] the first of several signs",
    )
    sign.add_argument("--prefix", default=None, help="the server's URL prefix (default /fs)")
    sign.add_argument("--config", metavar="FILE")


def cmd_sign(args: argparse.Namespace, environ: dict[str, str]) -> int:
    wanted = tuple(s for s in SERVE_SETTINGS if s.name in ("signing_key", "prefix"))
    values = settings_for(args, wanted, environ)
    if not values["signing_key"]:
        raise UsageError("no signing key: --signing-key, GRIDSERVE_SIGNING_KEY or --config")
    try:
        max_size = parse_size(args.max_size) if args.max_size is not None else None
        plan = plan_signed_request(
            path=args.path,
            url=args.url,
            url_prefix=values["prefix"],
            method=args.method,
            rev=args.rev,
            download=args.download,
            params=args.param,
            max_size=max_size,
        )
        signed = sign_path(values["signing_key"], plan.url, args.ttl, method=plan.method)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(args.base_url.rstrip("/") + signed)
    return 0
