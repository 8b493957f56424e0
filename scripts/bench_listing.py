"""Listing cost on local disk (review finding 5): a store of N files, then

- the latency of a ``limit=1`` listing (median of 10),
- 20 listings in parallel (wall time),
- a 1-byte upload while those 20 listings run.

  .venv/bin/python scripts/bench_listing.py [FILES] [--flat]

Run it with ``PYTHONPATH`` pointing at another checkout to compare before and after.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridserve.acl import default_acl
from gridserve.storage.local import LocalStorage
from tests.livehttp import LiveServer

TOKEN = "bench"


def build(root: Path, files: int, flat: bool) -> None:
    for number in range(files):
        if flat:
            (root / f"ep{number:06d}.webm").write_bytes(b"x" * 100)
            continue
        folder = root / f"show{number // 100:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"ep{number % 100:03d}.webm").write_bytes(b"x" * 100)


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 30_000
    flat = "--flat" in sys.argv
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "store"
        root.mkdir()
        build(root, files, flat)
        server = LiveServer(lambda: LocalStorage(root), acl=default_acl(upload_token=TOKEN)).start()
        try:
            url = server.url("/fs/?limit=1")
            requests.get(url, timeout=120).raise_for_status()  # warm the page cache
            single = []
            for _ in range(10):
                start = time.perf_counter()
                requests.get(url, timeout=120).raise_for_status()
                single.append(time.perf_counter() - start)

            def listing(_: int) -> float:
                start = time.perf_counter()
                requests.get(url, timeout=300).raise_for_status()
                return time.perf_counter() - start

            with concurrent.futures.ThreadPoolExecutor(21) as pool:
                start = time.perf_counter()
                listings = [pool.submit(listing, n) for n in range(20)]
                time.sleep(0.05)
                upload_start = time.perf_counter()
                requests.put(
                    server.url("/fs/up/one.bin"),
                    data=b"x",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=300,
                ).raise_for_status()
                upload = time.perf_counter() - upload_start
                concurrent.futures.wait(listings)
                parallel = time.perf_counter() - start
        finally:
            server.stop()
    layout = "flat" if flat else "100 per folder"
    print(f"{files} files ({layout}): limit=1 listing median {statistics.median(single):.4f} s")
    print(f"20 parallel listings: {parallel:.3f} s; 1-byte upload meanwhile: {upload:.3f} s")


if __name__ == "__main__":
    main()
