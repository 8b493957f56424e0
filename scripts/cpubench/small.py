"""Small files (100 KiB, one chunk each; 100 of them, each read once before): CPU per request
of 1,000 serial requests on one keep-alive connection (``cpu_req``, ms; the floor is the
driver's own lookup by name plus its one-chunk read), and requests per second of wrk with 16
connections on random files (``small_rps``; no floor: the driver alone answers no HTTP), with
the server's CPU per request under that load (``cpu_req16``, ms): a server bound by one core
answers at most 1000 / ``cpu_req16`` requests per second, whatever else the machine runs."""

from __future__ import annotations

import asyncio

from scripts.benchdata import SMALL_COUNT, SMALL_FILES_LUA
from scripts.benchtools import Server, checked, wrk
from scripts.cpubench.floors import small_floor
from scripts.cpubench.probes import serial_gets, server_cpu
from scripts.cpubench.scenario import Figures, Scenario, Setup

SERIAL = 1000
CONNECTIONS = 16
PATHS = [f"/fs/small/{i % SMALL_COUNT}.bin" for i in range(SERIAL)]


def measure_serial(setup: Setup, server: Server) -> Figures:
    _, cpu = server_cpu(server, serial_gets, server, PATHS)
    return {"cpu_req": cpu * 1000 / len(PATHS)}


def floor_serial(setup: Setup) -> Figures:
    return {"cpu_req": asyncio.run(small_floor(setup.uri, setup.db("small"), SERIAL))}


def measure_concurrent(setup: Setup, server: Server) -> Figures:
    url = server.url("/fs/small/0.bin")
    result, cpu = server_cpu(server, wrk, url, CONNECTIONS, setup.seconds, SMALL_FILES_LUA)
    checked(server.name, result)
    return {"small_rps": result.requests_per_s, "cpu_req16": cpu * 1000 / max(1, result.requests)}


def warm_up(setup: Setup, server: Server) -> None:
    serial_gets(server, PATHS[:SMALL_COUNT])


SMALL_SERIAL = Scenario("small files, serial", "small", measure_serial, floor_serial, warm_up)
SMALL_CONCURRENT = Scenario("small files, 16 connections", "small", measure_concurrent)
