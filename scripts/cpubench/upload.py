"""Uploads: one PUT of 64 MiB of random bytes (``up_cpu``, server CPU ms per MiB); the floor is
PyMongo's ``upload_from_stream`` plus the MD5 and SHA-256 gridserve stores. gridserve only
(the peers serve reads)."""

from __future__ import annotations

import asyncio

from scripts.benchtools import MIB, Server
from scripts.cpubench.contestants import is_gridserve
from scripts.cpubench.floors import upload_floor
from scripts.cpubench.probes import put, server_cpu
from scripts.cpubench.scenario import Figures, Scenario, Setup

UPLOAD = 64 * MIB


def measure(setup: Setup, server: Server) -> Figures:
    _, cpu = server_cpu(server, put, server, "/fs/up.bin", setup.upload)
    return {"up_cpu": cpu * 1000 / (len(setup.upload) / MIB)}


def floor(setup: Setup) -> Figures:
    return {"up_cpu": asyncio.run(upload_floor(setup.uri, setup.db("upfloor"), setup.upload))}


UPLOADS = Scenario("uploads", "upload", measure, floor, applies=is_gridserve)
