"""The files and the servers of gridserve against its peers (``scripts/benchmarks.py``), which
``scripts/bench --cpu`` (``scripts/cpubench``) measures too: the data sets (:func:`seed`), the
wrk scripts that request them, and the contestants serving them (:func:`servers`).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

from scripts.benchtools import CHUNK, MIB, PY, ROOT, TOKEN, Server, gridserve_server
from tests.dbserver import free_port

LARGE = 60 * MIB  # FerretDB v1 cannot serve peers' unbatched cursors over ~250 chunks
SMALL = 100 * 1024
SMALL_COUNT = 100
MEDIA = MIB
MEDIUM = 8 * MIB  # what 200 slow readers read: FerretDB holds each cursor's result in memory
MEDIA_COUNT = 8


# -- data -------------------------------------------------------------------------------------


# One database per dataset: FerretDB's SQLite backend scans whole collections.


def seed(uri: str, prefix: str, disk: Path, large: int = LARGE) -> None:
    """Stores the same files in GridFS (database ``<prefix>_<dataset>``) and under ``disk``;
    ``large`` is the size of ``large.bin``."""
    import gridfs
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)

    def bucket(dataset: str) -> gridfs.GridFSBucket:
        client.drop_database(f"{prefix}_{dataset}")
        return gridfs.GridFSBucket(client[f"{prefix}_{dataset}"], chunk_size_bytes=CHUNK)

    files: dict[str, list[tuple[str, bytes]]] = {
        "large": [("large.bin", os.urandom(large))],
        "small": [(f"small/{i}.bin", os.urandom(SMALL)) for i in range(SMALL_COUNT)],
        "media": [(f"media/{i}.bin", os.urandom(MEDIA)) for i in range(MEDIA_COUNT)],
        "medium": [("medium.bin", os.urandom(MEDIUM))],
    }
    for dataset, entries in files.items():
        target = bucket(dataset)
        for name, data in entries:
            target.upload_from_stream(name, data)
            (disk / name).parent.mkdir(parents=True, exist_ok=True)
            (disk / name).write_bytes(data)
    client.close()


SMALL_FILES_LUA = textwrap.dedent(
    f"""
    math.randomseed(os.time())
    request = function()
      return wrk.format("GET", "/fs/small/" .. math.random(0, {SMALL_COUNT - 1}) .. ".bin")
    end
    """
)

SEEK_LOAD_LUA = textwrap.dedent(
    f"""
    math.randomseed(os.time())
    request = function()
      local size = math.random(16384, 262144)
      local first = math.random(0, {MEDIA} - size)
      local path = "/fs/media/" .. math.random(0, {MEDIA_COUNT - 1}) .. ".bin"
      return wrk.format("GET", path, {{["Range"] = "bytes=" .. first .. "-" .. (first + size - 1)}})
    end
    """
)


# -- the contestants ---------------------------------------------------------------------------


def peer_server(name: str, kind: str, *args: str, supports_ranges: bool = True) -> Server:
    """A peer (``scripts/bench_peers.py KIND ARGS... PORT``) on a free port."""
    port = free_port()
    command = [PY, str(ROOT / "scripts" / "bench_peers.py"), kind, *args, str(port)]
    return Server(name, command, port, supports_ranges=supports_ranges)


def servers(uri: str, db_name: str, disk: Path, workdir: Path) -> dict[str, Server]:
    """Every contestant by name, not started, each on a free port: the GridFS servers on
    database ``db_name`` at ``uri``, the others on the files under ``disk``; nginx's
    configuration is written into ``workdir``."""
    found = {}
    # The chunk cache off: these figures compare reading the database (scripts/bench --cache
    # measures the cache).
    found["gridserve (GridFS)"] = gridserve_server(
        uri + db_name, "--upload-token", TOKEN, "--chunk-cache", "0", name="gridserve (GridFS)"
    )
    found["gridserve (local)"] = gridserve_server(disk, name="gridserve (local)")
    found["motor GridFSHandler"] = peer_server(
        "motor GridFSHandler", "motor-tornado", uri, db_name, supports_ranges=False
    )
    found["motor AIOHTTPGridFS"] = peer_server(
        "motor AIOHTTPGridFS", "motor-aiohttp", uri, db_name, supports_ranges=False
    )
    found["Tornado StaticFileHandler"] = peer_server(
        "Tornado StaticFileHandler", "tornado-static", str(disk)
    )
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            worker_processes 1;
            pid {workdir}/nginx.pid;
            error_log {workdir}/nginx-error.log;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              sendfile on;
              client_body_temp_path {workdir}/body;
              proxy_temp_path {workdir}/proxy;
              fastcgi_temp_path {workdir}/fastcgi;
              uwsgi_temp_path {workdir}/uwsgi;
              scgi_temp_path {workdir}/scgi;
              server {{
                listen 127.0.0.1:{port};
                location /fs/ {{ alias {disk}/; }}
              }}
            }}
            """
        )
    )
    found["nginx"] = Server("nginx", ["nginx", "-c", str(conf), "-g", "daemon off;"], port)
    return found
