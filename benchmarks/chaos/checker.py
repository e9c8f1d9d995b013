"""The Jepsen-style check: the final database against the client's log.

For every operation the log says what the client was told; the database says
what happened. The promise under test is that a client retrying as
documented never performs an operation twice and never loses one it was told
about. So:

* **lost** — an acknowledged create whose row is missing or different, an
  acknowledged update or transition the final state does not show (and no
  later, indeterminate operation on the object explains);
* **duplicate** — more rows than operations that could have made them (an
  account tag twice, more inquiries on an account than operations that may
  have created them, a row no operation explains), or a key the server
  *executed* twice (two answers for it that are not replays);
* **replay mismatch** — two answers for one key that differ in status, body,
  ``Content-Type`` or ``Location``, or a stored record that differs from what
  the client was told;
* **unexpected** — an answer the model rules out (a 409 on a fresh reference
  id, a 422 on a valid transition): a second execution seen from the client.

An indeterminate operation may have happened 0 or 1 times, never 2. The
checker runs on the outcomes as they ended during the chaos, and again after
the settle pass retried each indeterminate operation with its own key.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .history import Answer, Kind, Operation, Outcome
from .snapshot import AccountRow, InquiryRow, Snapshot

__all__ = ["Finding", "Verdict", "check"]

CATEGORIES = ("duplicate", "lost", "replay_mismatch", "unexpected")

MAYBE = (Outcome.INDETERMINATE, Outcome.UNEXPECTED)
"""Outcomes after which the write may or may not have happened."""


@dataclass(frozen=True)
class Finding:
    category: str
    """One of :data:`CATEGORIES`."""
    detail: str


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    keys_checked: int = 0
    replays_seen: int = 0
    """Answers marked ``Idempotent-Replayed: true`` that reached the client."""

    def add(self, category: str, detail: str) -> None:
        assert category in CATEGORIES
        self.findings.append(Finding(category, detail))

    def count(self, category: str) -> int:
        return sum(finding.category == category for finding in self.findings)

    @property
    def ok(self) -> bool:
        return not self.findings


def check(
    operations: Sequence[Operation],
    snapshot: Snapshot,
    client_answers: Mapping[str, Sequence[Answer]],
    server_answers: Mapping[str, Sequence[Answer]],
) -> Verdict:
    """Judge ``snapshot`` against the log; each operation counts with its ``final`` outcome."""
    verdict = Verdict()
    verdict.outcomes.update(op.final for op in operations if op.final is not None)
    for op in operations:
        if op.final is Outcome.UNEXPECTED:
            verdict.add("unexpected", f"{op.describe()}: {op.detail}")
    accounts_of = _check_accounts(operations, snapshot.accounts, verdict)
    _check_inquiries(operations, snapshot.inquiries, accounts_of, verdict)
    _check_final_values(operations, snapshot, verdict)
    _check_answers(operations, snapshot, client_answers, server_answers, verdict)
    return verdict


def _group(rows: Iterable[AccountRow], attribute: str) -> defaultdict[str, list[AccountRow]]:
    groups: defaultdict[str, list[AccountRow]] = defaultdict(list)
    for row in rows:
        value = getattr(row, attribute)
        if value is not None:
            groups[value].append(row)
    return groups


def _check_accounts(
    operations: Sequence[Operation], rows: Sequence[AccountRow], verdict: Verdict
) -> dict[int, str]:
    """Account creates: one row per tag. Returns the account each inquiry create touched."""
    by_tag, by_reference = _group(rows, "name_last"), _group(rows, "reference_id")
    explained: set[str] = set()
    account_of: dict[int, str] = {}
    for op in operations:
        if op.kind.creates_account:
            found = by_tag.get(op.tag, [])
            explained.update(row.id for row in found)
            if op.kind is Kind.DUPLICATE_REFERENCE:
                if found:
                    verdict.add("duplicate", f"{op.describe()} was refused yet made {found}")
            elif op.final is Outcome.OK:
                if not found:
                    verdict.add("lost", f"{op.describe()} acknowledged {op.result_id}: no row")
                elif len(found) > 1:
                    verdict.add("duplicate", f"{op.describe()} made {len(found)} rows: {found}")
                elif (found[0].id, found[0].reference_id) != (op.result_id, op.reference_id):
                    verdict.add("lost", f"{op.describe()} acknowledged {op.result_id}: {found}")
            elif len(found) > 1:
                verdict.add("duplicate", f"{op.describe()} (indeterminate) made {found}")
        elif op.kind is Kind.CREATE_INQUIRY and op.reference_id is not None:
            found = by_reference.get(op.reference_id, [])
            explained.update(row.id for row in found)
            if found:
                account_of[op.index] = found[0].id
            if op.final is Outcome.OK and [row.id for row in found] != [op.result_account_id]:
                verdict.add(
                    "lost", f"{op.describe()} joined account {op.result_account_id}: {found}"
                )
    for row in rows:
        if row.id not in explained:
            verdict.add("duplicate", f"account {row} was made by no operation")
    return account_of


def _check_inquiries(
    operations: Sequence[Operation],
    rows: Sequence[InquiryRow],
    account_of: Mapping[int, str],
    verdict: Verdict,
) -> None:
    """Per account: every acknowledged inquiry is there; extras only from indeterminate ops."""
    by_account: defaultdict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_account[row.account_id].add(row.id)
    certain: defaultdict[str, set[str]] = defaultdict(set)
    maybe: Counter[str] = Counter()
    for op in operations:
        if op.kind is Kind.CREATE_INQUIRY:
            account = account_of.get(op.index)
        elif op.kind is Kind.CREATE_INQUIRY_FOR_ACCOUNT:
            account = op.target
        else:
            continue
        if account is None:
            continue  # an indeterminate create that made no account (checked above)
        if op.final is Outcome.OK and op.result_id is not None:
            certain[account].add(op.result_id)
        elif op.final in MAYBE:
            maybe[account] += 1
    for account in set(by_account) | set(certain):
        present, acknowledged = by_account.get(account, set()), certain.get(account, set())
        for missing in sorted(acknowledged - present):
            verdict.add("lost", f"inquiry {missing} on account {account} was acknowledged")
        extra = len(present - acknowledged) - maybe[account]
        if extra > 0:
            verdict.add(
                "duplicate",
                f"account {account} has {extra} inquiries more than its operations explain "
                f"({len(acknowledged)} acknowledged, {maybe[account]} indeterminate, "
                f"{len(present)} in the database)",
            )


def _acceptable(ops: Sequence[Operation], initial: str | None, value_of: str) -> set[str | None]:
    """What an object's final value may be after ``ops`` on it, in the order they ran."""
    accepted: set[str | None] = {initial}
    for op in ops:
        value = op.value if value_of == "value" else op.target_status
        if op.final is Outcome.OK:
            accepted = {value}
        elif op.final in MAYBE:
            accepted.add(value)
    return accepted


def _check_final_values(
    operations: Sequence[Operation], snapshot: Snapshot, verdict: Verdict
) -> None:
    """The final ``name_first`` and inquiry status show the last acknowledged operation."""
    initial_name: dict[str, str | None] = {}
    for op in operations:
        if op.final is Outcome.OK and op.result_id is not None:
            if op.kind.creates_account:
                initial_name[op.result_id] = op.value
            elif op.kind is Kind.CREATE_INQUIRY and op.result_account_id is not None:
                initial_name.setdefault(op.result_account_id, None)
    updates: defaultdict[str, list[Operation]] = defaultdict(list)
    transitions: defaultdict[str, list[Operation]] = defaultdict(list)
    for op in sorted(operations, key=lambda op: op.index):
        if op.kind is Kind.UPDATE_ACCOUNT and op.target is not None:
            updates[op.target].append(op)
        elif op.kind is Kind.TRANSITION and op.target is not None:
            transitions[op.target].append(op)
    names = {row.id: row.name_first for row in snapshot.accounts}
    for account, ops in updates.items():
        accepted = _acceptable(ops, initial_name.get(account), "value")
        if account in names and names[account] not in accepted:
            verdict.add(
                "lost",
                f"account {account} has name_first {names[account]!r}; the log allows "
                f"{sorted(map(str, accepted))} (last update: {ops[-1].describe()})",
            )
    statuses = {row.id: row.status for row in snapshot.inquiries}
    for inquiry, ops in transitions.items():
        accepted = _acceptable(ops, "created", "status")
        if inquiry in statuses and statuses[inquiry] not in accepted:
            verdict.add(
                "lost",
                f"inquiry {inquiry} is {statuses[inquiry]}; the log allows "
                f"{sorted(map(str, accepted))} (last transition: {ops[-1].describe()})",
            )


def _check_answers(
    operations: Sequence[Operation],
    snapshot: Snapshot,
    client_answers: Mapping[str, Sequence[Answer]],
    server_answers: Mapping[str, Sequence[Answer]],
    verdict: Verdict,
) -> None:
    """Per key: one execution, every answer alike, and the stored record alike too."""
    for op in operations:
        seen = [a for a in client_answers.get(op.key, ()) if a.recorded_kind]
        sent = [a for a in server_answers.get(op.key, ()) if a.recorded_kind]
        verdict.replays_seen += sum(a.replayed for a in client_answers.get(op.key, ()))
        if not (seen or sent):
            continue
        verdict.keys_checked += 1
        executions = sum(not answer.replayed for answer in sent)
        if executions > 1:
            verdict.add("duplicate", f"{op.describe()}: the server executed it {executions} times")
        identities = {answer.identity for answer in [*seen, *sent]}
        if len(identities) > 1:
            statuses = sorted({identity[0] for identity in identities})
            verdict.add(
                "replay_mismatch",
                f"{op.describe()}: {len(identities)} different answers (statuses {statuses})",
            )
        record = snapshot.records.get(op.key)
        first = (seen or sent)[0]
        if record is None or record.status != "completed":
            verdict.add("lost", f"{op.describe()}: answered {first.status} but no record kept")
        elif (record.response_status, record.response_body) != (first.status, first.body):
            verdict.add(
                "replay_mismatch",
                f"{op.describe()}: the record holds {record.response_status}, "
                f"the client was told {first.status}",
            )
