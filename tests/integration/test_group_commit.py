"""The group commit's scheduler (`ledger.batched.GroupCommit`, PostgreSQL): how many statements it
keeps in flight, when a stalled one lets another start, how many calls one statement carries,
how a batch refused on a unique index is split, and that every caller is answered.

The statements run on PostgreSQL, but wait at a gate in front of the pool until the test lets
them through, and the writer's clock is the test's: what is asserted depends on neither the
machine's speed nor a sleep. A caller left unanswered fails the test after `ANSWERED_WITHIN`
instead of hanging it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from rewardmiles.db.engine import StatementPool, is_outage, refused_as_read_only
from rewardmiles.issuance import service
from rewardmiles.issuance.calls import Outcome, PartnerCall
from rewardmiles.ledger.batched import GroupCommit
from tests.conftest import DatabaseFactory
from tests.integration import test_one_statement_issue as one_statement
from tests.integration.test_one_statement_issue import (
    ACTIVE,
    ANSWERED_WITHIN,
    NOW,
    Rig,
    event,
    partner_call,
)

pytestmark = pytest.mark.postgres_only


class Clock:
    """The writer's monotonic clock, in seconds, set by the test. Its values are chosen so that
    the differences the writer takes are exact in binary (1000.0625 - 1000.0 is 0.0625)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gate:
    """`StatementPool.run` behind a gate: each statement the writer sends is recorded (how many
    calls it carries) and waits until let through, then runs on PostgreSQL. `running` counts the
    statements sent and not yet answered, `peak` the most at once."""

    def __init__(self, pool: StatementPool, monkeypatch: pytest.MonkeyPatch) -> None:
        self._run = pool.run
        self.sent: list[int] = []  # the number of calls of each statement, in the order sent
        self._held: list[asyncio.Event] = []
        self.opened = False
        self.running = 0
        self.peak = 0
        monkeypatch.setattr(pool, "run", self.run)

    async def run(self, statement: bytes, params: Sequence[object]) -> list[Any] | None:
        self.sent.append(len(json.loads(str(params[0]))))  # `calls`, the first parameter
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if not self.opened:
                through = asyncio.Event()
                self._held.append(through)
                await through.wait()
            return await self._run(statement, params)
        finally:
            self.running -= 1

    def let_through(self, index: int) -> None:
        """Let the `index`-th statement held run."""
        self._held[index].set()

    def open(self) -> None:
        """Let every statement held run, and those sent from now on pass."""
        self.opened = True
        for through in self._held:
            through.set()


def start(rig: Rig, writer: GroupCommit, call: PartnerCall) -> asyncio.Task[Outcome | None]:
    """The one-statement path for `call`, as a request runs it, with `writer` as its group
    commit; the writer sees the call once the task has run (`settle`)."""
    return asyncio.create_task(
        service.execute_at_once(writer, rig.db, rig.settings, rig.registry, call, now=lambda: NOW)
    )


async def settle() -> None:
    """Run the event loop until every task waits on something outside it. While every statement
    is held at the gate nothing outside the loop is pending, and the chain from a call to its
    statement at the gate is a few steps long: this many turns of the loop leave none undone."""
    for _ in range(50):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (for PostgreSQL's answers) until `condition` holds."""
    async with asyncio.timeout(ANSWERED_WITHIN):
        while not condition():
            await asyncio.sleep(0.001)


async def answers(tasks: Sequence[asyncio.Task[Outcome | None]]) -> list[Outcome | None]:
    async with asyncio.timeout(ANSWERED_WITHIN):
        return list(await asyncio.gather(*tasks))


def posted(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.status == 200 and not outcome.replayed


@pytest.fixture
def rig(dialect: str, database_factory: DatabaseFactory) -> Iterator[Rig]:
    made = Rig(database_factory.create(dialect))
    made.general(partner_call(event()))  # loads the reference cache, as a first request would
    yield made
    made.close()


def test_one_statement_in_flight_until_every_one_has_stalled_and_four_at_most(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer as the app builds it: one statement in flight; a call arriving when every
    statement in flight has run longer than 50 ms starts another, up to four; the calls waiting
    go out together in the next statement; an idle writer sends a call at once."""
    gate = Gate(rig.pool, monkeypatch)
    clock = Clock(1000.0)
    writer = GroupCommit(rig.pool, clock=clock)  # the defaults
    calls = [partner_call(event(miles=m), key=f"k-flight-{m}") for m in range(1, 9)]
    before = one_statement._balance(rig, ACTIVE)

    async def scenario() -> list[Outcome | None]:
        tasks = [start(rig, writer, calls[0])]
        await settle()
        assert gate.sent == [1]  # a lone call waits for nothing
        tasks.append(start(rig, writer, calls[1]))
        await settle()
        assert gate.sent == [1]  # the statement in flight has not stalled: the call waits
        clock.now = 1000.0625  # 62.5 ms on: the first statement has stalled
        tasks.append(start(rig, writer, calls[2]))
        await settle()
        assert gate.sent == [1, 2]  # a second statement, with both calls waiting
        tasks.append(start(rig, writer, calls[3]))
        await settle()
        assert gate.sent == [1, 2]  # the second has just started: not every one has stalled
        clock.now = 1000.125
        tasks.append(start(rig, writer, calls[4]))
        await settle()
        assert gate.sent == [1, 2, 2]
        clock.now = 1000.1875
        tasks.append(start(rig, writer, calls[5]))
        await settle()
        assert gate.sent == [1, 2, 2, 1]
        clock.now = 1010.0  # every one long stalled, but four are in flight
        tasks.append(start(rig, writer, calls[6]))
        await settle()
        assert gate.sent == [1, 2, 2, 1]
        assert gate.running == 4
        gate.let_through(0)  # the first commits; its drain sends the call left waiting
        await until(lambda: len(gate.sent) == 5)
        assert gate.sent == [1, 2, 2, 1, 1]
        assert gate.running == 4
        gate.open()
        outcomes = await answers(tasks)
        assert writer._drains == {}  # every drain left with nothing waiting
        # Idle again, at the same instant: the next call is sent at once.
        last = start(rig, writer, calls[7])
        await settle()
        assert gate.sent == [1, 2, 2, 1, 1, 1]
        return [*outcomes, *await answers([last])]

    outcomes = rig.loop.run_until_complete(scenario())
    assert gate.peak == 4
    assert all(posted(o) for o in outcomes), outcomes
    assert one_statement._balance(rig, ACTIVE) == before + sum(range(1, 9))
    assert writer._drains == {}


def test_in_flight_max_and_cap_as_configured_and_stalled_means_past_the_limit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two statements in flight freely, a third only once both have run longer than
    `stalled_after` — not when they have run exactly that long —, and never a fourth."""
    gate = Gate(rig.pool, monkeypatch)
    clock = Clock(1000.0)
    writer = GroupCommit(rig.pool, in_flight_max=2, in_flight_cap=3, stalled_after=0.5, clock=clock)
    calls = [partner_call(event(miles=m), key=f"k-limits-{m}") for m in range(1, 7)]

    async def scenario() -> list[Outcome | None]:
        tasks = [start(rig, writer, calls[0])]
        await settle()
        tasks.append(start(rig, writer, calls[1]))
        await settle()
        assert gate.sent == [1, 1]  # two in flight without stalling
        tasks.append(start(rig, writer, calls[2]))
        await settle()
        assert gate.sent == [1, 1]
        clock.now = 1000.5  # both have run exactly `stalled_after`: not yet stalled
        tasks.append(start(rig, writer, calls[3]))
        await settle()
        assert gate.sent == [1, 1]
        clock.now = 1000.75
        tasks.append(start(rig, writer, calls[4]))
        await settle()
        assert gate.sent == [1, 1, 3]  # a third, with the three calls waiting
        clock.now = 1100.0
        tasks.append(start(rig, writer, calls[5]))
        await settle()
        assert gate.sent == [1, 1, 3]  # the cap
        gate.open()
        return await answers(tasks)

    outcomes = rig.loop.run_until_complete(scenario())
    assert gate.sent == [1, 1, 3, 1]
    assert gate.peak == 3
    assert all(posted(o) for o in outcomes), outcomes
    assert writer._drains == {}


def test_a_cap_below_the_maximum_is_raised_to_it(rig: Rig) -> None:
    assert GroupCommit(rig.pool, in_flight_max=3, in_flight_cap=2).in_flight_cap == 3
    assert GroupCommit(rig.pool, in_flight_max=1, in_flight_cap=2).in_flight_cap == 2


def test_a_statement_carries_32_calls_at_most(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The calls that waited behind a statement go out 32 to a statement (the app's writer)."""
    gate = Gate(rig.pool, monkeypatch)
    observed: list[int] = []  # what the metrics' batch-size histogram is told
    writer = GroupCommit(rig.pool, clock=Clock(), on_batch=observed.append)
    calls = [partner_call(event(miles=1 + m % 5), key=f"k-max-{m}") for m in range(41)]
    before = one_statement._balance(rig, ACTIVE)

    async def scenario() -> list[Outcome | None]:
        tasks = [start(rig, writer, calls[0])]
        await settle()
        tasks += [start(rig, writer, call) for call in calls[1:]]
        await settle()
        assert gate.sent == [1]
        gate.let_through(0)
        await until(lambda: len(gate.sent) == 2)
        assert gate.sent == [1, 32]
        gate.open()
        return await answers(tasks)

    outcomes = rig.loop.run_until_complete(scenario())
    assert gate.sent == [1, 32, 8]
    assert observed == gate.sent  # one observation per statement, of its calls
    assert all(posted(o) for o in outcomes), outcomes
    assert one_statement._balance(rig, ACTIVE) == before + sum(1 + m % 5 for m in range(41))


def test_a_batch_of_two_refused_on_the_unique_index_is_split_and_the_other_call_posts(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicate = event()
    first = rig.at_once(partner_call(duplicate, key="k-two-first"))
    assert posted(first)
    again = partner_call(duplicate, key="k-two-again")  # a transaction id already written
    fresh = partner_call(event(miles=11), key="k-two-fresh")
    gate = Gate(rig.pool, monkeypatch)
    observed: list[int] = []
    writer = GroupCommit(rig.pool, clock=Clock(), on_batch=observed.append)
    before = one_statement._balance(rig, ACTIVE)

    async def scenario() -> list[Outcome | None]:
        lead = start(rig, writer, partner_call(event(miles=3), key="k-two-lead"))
        await settle()  # the lead's statement in flight: the two wait, and go out together
        pair = [start(rig, writer, again), start(rig, writer, fresh)]
        await settle()
        assert gate.sent == [1]
        gate.open()
        assert posted((await answers([lead]))[0])
        return await answers(pair)

    refused, written = rig.loop.run_until_complete(scenario())
    assert gate.sent == [1, 2, 1, 1]  # the lead, the pair refused, then each alone
    assert observed == gate.sent  # each statement observed, the split's singles too
    assert refused is None  # left to the unit of work
    assert posted(written)
    assert one_statement._balance(rig, ACTIVE) == before + 3 + 11
    replay = rig.general(again)  # rule 3.7: the same body again is a replay of the first
    assert replay.replayed
    assert first is not None
    assert replay.transaction_id == first.transaction_id


def test_a_lone_call_refused_on_the_unique_index_is_not_sent_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicate = event()
    assert posted(rig.at_once(partner_call(duplicate, key="k-lone-first")))
    gate = Gate(rig.pool, monkeypatch)
    gate.open()
    writer = GroupCommit(rig.pool, clock=Clock())
    before = one_statement._counts(rig)

    async def alone() -> list[Outcome | None]:
        return await answers([start(rig, writer, partner_call(duplicate, key="k-lone-again"))])

    assert rig.loop.run_until_complete(alone()) == [None]  # left to the unit of work
    assert gate.sent == [1]  # the index refused it: there is no other call to find
    assert one_statement._counts(rig) == before
    assert writer._drains == {}


def test_a_database_error_answers_every_call_of_its_batch(rig: Rig) -> None:
    """A statement that fails for a reason other than one call's (here its connection is on a
    server that takes no writes: SQLSTATE 25006, an outage) gives its error to every caller of
    the batch, and the writer goes on, on a fresh connection."""
    writer = GroupCommit(rig.pool, clock=Clock())

    async def left_read_only() -> None:  # the only idle connection: the statement takes it
        async with rig.pool.connection() as conn:
            await conn.execute(b"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    rig.loop.run_until_complete(left_read_only())
    before = one_statement._counts(rig)
    calls = [partner_call(event(miles=m), key=f"k-lost-{m}") for m in range(1, 4)]

    async def together() -> list[Outcome | BaseException | None]:
        tasks = [start(rig, writer, call) for call in calls]  # one batch: one statement
        async with asyncio.timeout(ANSWERED_WITHIN):
            return list(await asyncio.gather(*tasks, return_exceptions=True))

    failures = rig.loop.run_until_complete(together())
    errors = [f for f in failures if isinstance(f, DBAPIError)]
    assert errors == failures, failures
    assert len({id(f) for f in errors}) == 1  # the one statement's error
    assert refused_as_read_only(errors[0])
    assert is_outage(errors[0])
    assert one_statement._counts(rig) == before
    assert writer._drains == {}

    async def again() -> list[Outcome | None]:
        return await answers([start(rig, writer, calls[0])])

    assert posted(rig.loop.run_until_complete(again())[0])  # on a fresh connection
