"""The chaos run's parts, each on its own: the proxy's new fault modes, the balancer, the checker.

The checker is what turns a chaos run into a verdict, so it is tested the way
its own bugs would show: handed a log and a database that disagree, it must
say so (a checker that can only pass proves nothing).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from tests.server_process import free_port
from tests.support.fault_proxy import Fault, FaultProxy, SlowAnswer, SlowRequest

from benchmarks.chaos.balancer import Balancer
from benchmarks.chaos.checker import check
from benchmarks.chaos.history import Answer, Kind, Operation, Outcome
from benchmarks.chaos.snapshot import AccountRow, InquiryRow, RecordRow, Snapshot

BODY = bytes(range(256)) * 8
"""What the upstream answers to GET: 2 KiB, so slow and truncated answers have a middle."""


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(BODY)

    def do_POST(self) -> None:
        received = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(hashlib.sha256(received).hexdigest().encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    """A plain HTTP/1.1 server on loopback; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream) as fault_proxy:
        yield fault_proxy


# -- the proxy's modes for the chaos run ---------------------------------------------------


def test_slow_answer_delivers_every_byte(proxy: FaultProxy) -> None:
    proxy.plan(SlowAnswer(chunk_size=100, interval=0.001))
    response = httpx.get(f"{proxy.url}/slow", timeout=5)
    assert response.content == BODY
    [record] = proxy.requests
    assert record.forwarded
    assert record.response_status == 200


def test_slow_answer_slower_than_the_read_timeout_times_out_mid_body(proxy: FaultProxy) -> None:
    proxy.plan(SlowAnswer(chunk_size=10, interval=1.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{proxy.url}/slow", timeout=httpx.Timeout(5, read=0.2))
    assert proxy.requests[0].response_status == 200  # the server did answer, in full


def test_slow_request_reaches_the_server_intact(proxy: FaultProxy) -> None:
    proxy.plan(SlowRequest(chunk_size=500, interval=0.001))
    sent = bytes(range(256)) * 20
    response = httpx.post(f"{proxy.url}/upload", content=sent, timeout=5)
    assert response.content == hashlib.sha256(sent).hexdigest().encode()
    assert isinstance(proxy.requests[0].action, SlowRequest)


def test_truncated_answer_ends_the_connection_mid_body(proxy: FaultProxy) -> None:
    proxy.plan(Fault.TRUNCATE_ANSWER)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{proxy.url}/cut", timeout=5)
    [record] = proxy.requests
    assert (record.forwarded, record.response_status, record.response_body) == (True, 200, BODY)


def test_chooser_picks_for_unplanned_requests_only(proxy: FaultProxy) -> None:
    asked: list[tuple[str, str]] = []

    def chooser(method: str, path: str) -> Fault:
        asked.append((method, path))
        return Fault.RESET_BEFORE_FORWARD

    proxy.set_chooser(chooser)
    proxy.plan(Fault.RELAY)
    assert httpx.get(f"{proxy.url}/planned", timeout=5).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{proxy.url}/chosen", timeout=5)
    proxy.set_chooser(None)
    assert httpx.get(f"{proxy.url}/relayed", timeout=5).status_code == 200
    assert asked == [("GET", "/chosen")]
    assert [record.forwarded for record in proxy.requests] == [True, False, True]


# -- the load balancer ---------------------------------------------------------------------


def test_balancer_skips_a_backend_that_is_down(upstream: int) -> None:
    down = free_port()
    with Balancer([("127.0.0.1", down), ("127.0.0.1", upstream)], patience=1) as balancer:
        for _ in range(4):
            # A new connection each time, so each one is balanced anew.
            response = httpx.get(f"http://127.0.0.1:{balancer.port}/", timeout=5)
            assert response.content == BODY
    assert balancer.refused >= 2
    assert balancer.turned_away == 0


def test_balancer_closes_the_connection_when_no_backend_is_up() -> None:
    with (
        Balancer([("127.0.0.1", free_port())], patience=0.2) as balancer,
        pytest.raises(httpx.TransportError),
    ):
        httpx.get(f"http://127.0.0.1:{balancer.port}/", timeout=5)
    assert balancer.turned_away == 1


# -- the checker ---------------------------------------------------------------------------

ORG_BODY = b'{"data":{"id":"act_1"}}'


def create(index: int, outcome: Outcome, result_id: str | None = None) -> Operation:
    tag = f"op-{index}"
    return Operation(
        index,
        0,
        Kind.CREATE_ACCOUNT,
        key=f"{tag}-key",
        tag=tag,
        reference_id=f"{tag}-ref",
        value="Ada",
        outcome=outcome,
        result_id=result_id,
    )


def account(row_id: str, index: int, name_first: str | None = "Ada") -> AccountRow:
    return AccountRow(row_id, f"op-{index}-ref", name_first, f"op-{index}")


def answer(body: bytes = ORG_BODY, *, replayed: bool = False, status: int = 201) -> Answer:
    headers = {"Content-Type": "application/json"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Answer.of(status, headers, body)


def record(key: str, body: bytes = ORG_BODY, status: int = 201) -> RecordRow:
    return RecordRow(key, "completed", status, body)


def snapshot(
    accounts: list[AccountRow],
    inquiries: list[InquiryRow] | None = None,
    records: list[RecordRow] | None = None,
) -> Snapshot:
    return Snapshot(accounts, inquiries or [], {r.key: r for r in records or []})


def test_checker_passes_a_consistent_history() -> None:
    ops = [create(1, Outcome.OK, "act_1"), create(2, Outcome.INDETERMINATE)]
    db = snapshot([account("act_1", 1)], records=[record("op-1-key")])
    answers = {"op-1-key": [answer(), answer(replayed=True)]}
    verdict = check(ops, db, answers, answers)
    assert verdict.ok, verdict.findings
    assert verdict.replays_seen == 1  # counted on the client's side only


def test_checker_reports_an_acknowledged_create_that_is_missing() -> None:
    verdict = check([create(1, Outcome.OK, "act_1")], snapshot([]), {}, {})
    assert [f.category for f in verdict.findings] == ["lost"]


def test_checker_reports_two_rows_for_one_operation() -> None:
    rows = [account("act_1", 1), account("act_2", 1)]
    verdict = check([create(1, Outcome.INDETERMINATE)], snapshot(rows), {}, {})
    assert [f.category for f in verdict.findings] == ["duplicate"]


def test_checker_reports_a_row_no_operation_made() -> None:
    verdict = check([], snapshot([account("act_9", 9)]), {}, {})
    assert [f.category for f in verdict.findings] == ["duplicate"]


def test_checker_reports_a_key_executed_twice() -> None:
    ops = [create(1, Outcome.OK, "act_1")]
    db = snapshot([account("act_1", 1)], records=[record("op-1-key")])
    server = {"op-1-key": [answer(), answer()]}  # two answers, neither a replay
    verdict = check(ops, db, {}, server)
    assert [f.category for f in verdict.findings] == ["duplicate"]


def test_checker_reports_a_replay_that_differs() -> None:
    ops = [create(1, Outcome.OK, "act_1")]
    db = snapshot([account("act_1", 1)], records=[record("op-1-key")])
    client = {"op-1-key": [answer(), answer(b'{"data":{"id":"act_2"}}', replayed=True)]}
    verdict = check(ops, db, client, {})
    assert [f.category for f in verdict.findings] == ["replay_mismatch"]


def test_checker_ignores_answers_the_server_never_records() -> None:
    """A 503, a 429 and the proxy's own 502 may differ from the final answer."""
    ops = [create(1, Outcome.OK, "act_1")]
    db = snapshot([account("act_1", 1)], records=[record("op-1-key")])
    unavailable = answer(b'{"errors":[{"code":"service_unavailable"}]}', status=503)
    injected = Answer.of(502, {"Request-Id": "req_fault_proxy"}, b"{}")
    client = {"op-1-key": [unavailable, injected, answer(replayed=True)]}
    assert check(ops, db, client, {}).ok


def test_checker_reports_a_lost_update_unless_an_indeterminate_one_explains_it() -> None:
    created = create(1, Outcome.OK, "act_1")
    update = Operation(2, 0, Kind.UPDATE_ACCOUNT, "op-2-key", "op-2", target="act_1", value="v2")
    update.outcome = Outcome.OK
    later = Operation(3, 0, Kind.UPDATE_ACCOUNT, "op-3-key", "op-3", target="act_1", value="v3")
    later.outcome = Outcome.INDETERMINATE
    stale = snapshot([account("act_1", 1, name_first="Ada")])
    assert [f.category for f in check([created, update], stale, {}, {}).findings] == ["lost"]
    for name in ("v2", "v3"):  # the indeterminate update may or may not have happened
        assert check([created, update, later], snapshot([account("act_1", 1, name)]), {}, {}).ok


def test_checker_counts_inquiries_per_account() -> None:
    created = create(1, Outcome.OK, "act_1")
    joins = []
    for index, outcome in ((2, Outcome.OK), (3, Outcome.INDETERMINATE)):
        op = Operation(
            index, 0, Kind.CREATE_INQUIRY_FOR_ACCOUNT, f"op-{index}-key", f"op-{index}",
            target="act_1", outcome=outcome,
        )  # fmt: skip
        joins.append(op)
    joins[0].result_id = "inq_2"
    rows = [account("act_1", 1)]

    def inquiries(*ids: str) -> list[InquiryRow]:
        return [InquiryRow(i, "act_1", "op-1-ref", "created") for i in ids]

    assert check([created, *joins], snapshot(rows, inquiries("inq_2")), {}, {}).ok
    assert check([created, *joins], snapshot(rows, inquiries("inq_2", "inq_x")), {}, {}).ok
    too_many = check(
        [created, *joins], snapshot(rows, inquiries("inq_2", "inq_x", "inq_y")), {}, {}
    )
    assert [f.category for f in too_many.findings] == ["duplicate"]
    missing = check([created, *joins], snapshot(rows, inquiries("inq_x")), {}, {})
    assert [f.category for f in missing.findings] == ["lost"]
