"""What the bench scripts share (scripts.benchtools): reading wrk's report and /metrics (pure),
and finding a process group's members and a parent's children in /proc (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.benchtools import (
    PGRP,
    PPID,
    curl_command,
    live_processes,
    read_metrics,
    read_wrk,
    stat_fields,
)

# wrk 4.2 --latency against gridserve: 200 small files, then 404s on a closing connection.
WRK_OK = """\
Running 1s test @ http://127.0.0.1:35441/fs/small/0.bin
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    24.11ms   32.24ms 165.73ms   91.46%
    Req/Sec   256.44    140.14   554.00     72.22%
  Latency Distribution
     50%   13.14ms
     75%   23.06ms
     90%   52.64ms
     99%     1.20s
  472 requests in 1.08s, 46.32MB read
Requests/sec:    435.51
Transfer/sec:     42.74MB
"""
WRK_FAILING = """\
Running 1s test @ http://127.0.0.1:35441/fs/nope
  1 threads and 1 connections
  Latency Distribution
     50%  690.00us
     99%  145.35ms
  200 requests in 1.07s, 39.06KB read
  Socket errors: connect 1, read 200, write 0, timeout 3
  Non-2xx or 3xx responses: 200
Requests/sec:    186.53
Transfer/sec:     36.43KB
"""


def test_wrk_report_figures_in_ms_and_mib() -> None:
    result = read_wrk(WRK_OK)
    assert result.requests_per_s == 435.51
    assert result.mib_per_s == pytest.approx(42.74)
    assert result.p50_ms == pytest.approx(13.14)
    assert result.p99_ms == pytest.approx(1200)
    assert (result.requests, result.errors, result.non_2xx) == (472, 0, 0)


def test_wrk_report_socket_errors_summed_and_non_2xx_counted() -> None:
    result = read_wrk(WRK_FAILING)
    assert (result.requests, result.errors, result.non_2xx) == (200, 204, 200)
    assert result.p50_ms == pytest.approx(0.69)
    assert result.mib_per_s == pytest.approx(36.43 / 1024)


def test_metrics_by_name_and_labels_comments_and_non_numbers_left_out() -> None:
    text = """\
# HELP gridserve_requests_total HTTP requests answered
# TYPE gridserve_requests_total counter
gridserve_requests_total{method="GET",status="200"} 480.0
gridserve_requests_total{method="PUT",status="499"} 3.0
gridserve_sent_bytes_total 4.9152e+07
gridserve_streams_in_flight 0.0
gridserve_odd NaN
"""
    assert read_metrics(text) == {
        'gridserve_requests_total{method="GET",status="200"}': 480.0,
        'gridserve_requests_total{method="PUT",status="499"}': 3.0,
        "gridserve_sent_bytes_total": 4.9152e07,
        "gridserve_streams_in_flight": 0.0,
    }


def test_curl_command_downloads_the_url_count_times_on_one_connection() -> None:
    command = curl_command("http://127.0.0.1:1/fs/a", 3)
    assert command[0] == "curl" and "--fail" in command
    assert command.count("http://127.0.0.1:1/fs/a") == 3
    assert command.count("/dev/null") == 3


def test_a_process_group_and_a_parents_children_found_while_they_live() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        here = Path(f"/proc/{child.pid}")
        assert list(live_processes(PGRP, child.pid)) == [here]  # leads a group of its own
        assert here in live_processes(PPID, os.getpid())
        assert int(stat_fields(here / "stat")[PPID]) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert live_processes(PGRP, child.pid) == {}
    assert here not in live_processes(PPID, os.getpid())
