"""A 48 MiB multipart field costs a keyed request no more memory than an unkeyed one.

The handler refuses a form field over 64 KiB (400 ``invalid_multipart``) after
reading that much; with an ``Idempotency-Key`` the idempotency layer reads the
whole body first (spooled to disk past 1 MiB) and fingerprints it as it
passes. The fingerprint used to buffer text fields whole, so that request
raised the real server's peak RSS by ~145 MiB; now it hashes a long field as it
streams and keeps at most 64 KiB of it.

Measured on real ``retrysafe serve`` processes through ``/proc/PID/status``
``VmHWM`` (the peak resident set, so a short-lived spike is not missed). Each
variant gets a fresh server, warmed up by a small request of the same shape,
and the test compares the peaks' growth. The margin (24 MiB) is half the
field: a fingerprint that kept the field would add at least the field's 48
MiB and fail, while what the keyed path legitimately adds (64 KiB chunks in
flight, the 1 MiB spool buffer, allocator slack) stays a few MiB, so the test
does not flake on noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from server_process import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
FIELD_SIZE = 48 * MiB
MARGIN = 24 * MiB
BOUNDARY = "memory-b0undary"


def _form(value_size: int) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="data[attributes][name_first]"\r\n\r\n'
    ).encode()
    return head + b"x" * value_size + f"\r\n--{BOUNDARY}--\r\n".encode()


def _peak_rss(server: ServerProcess) -> int:
    """The server's peak resident set so far, in bytes (Linux ``VmHWM``)."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def _peak_growth(tmp_path: Path, processes: list[ServerProcess], *, keyed: bool) -> int:
    """How much a fresh server's peak RSS grows for one 48 MiB field request."""
    db_url = f"sqlite:///{tmp_path / ('keyed' if keyed else 'unkeyed')}.db"
    created = run_cli("keys", "create", "--org", "memory", "--database", db_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.splitlines()[-1]
    server = start_server(["--database", db_url], cwd=tmp_path)
    processes.append(server)
    server.wait_healthy()
    with httpx.Client(base_url=server.base_url + "/api/v1", timeout=60) as http:

        def send(body: bytes, key: str) -> None:
            headers = {
                "Authorization": f"Bearer {secret}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            }
            if keyed:
                headers["Idempotency-Key"] = key
            try:
                response = http.post("/accounts", content=body, headers=headers)
            except httpx.TransportError:
                # Unkeyed, the handler answers after 64 KiB and may close the connection
                # while the rest is still being sent; the memory it used is what counts.
                assert not keyed, "a keyed request reads its whole body before answering"
                return
            assert response.status_code == 400, response.text
            assert response.json()["errors"][0]["code"] == "invalid_multipart"

        send(_form(100 * 1024), "memory-warm-up")
        big = _form(FIELD_SIZE)
        before = _peak_rss(server)
        send(big, "memory-measured")
    return _peak_rss(server) - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_a_huge_field_with_a_key_raises_peak_rss_no_more_than_without(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    unkeyed = _peak_growth(tmp_path, processes, keyed=False)
    keyed = _peak_growth(tmp_path, processes, keyed=True)
    print(f"peak RSS growth: without key {unkeyed / MiB:.1f} MiB, with key {keyed / MiB:.1f} MiB")
    assert keyed < unkeyed + MARGIN, (
        f"with a key the peak grew {keyed / MiB:.1f} MiB, without {unkeyed / MiB:.1f} MiB"
    )
