"""The fencing rules (goka_ray.control.fencing) with an injected clock: no Ray, no sleeps."""

from __future__ import annotations

import pytest

from goka_ray import FencedError, GokaRayError
from goka_ray.control.fencing import EpochRecord, EpochTable, Lease, MemoryEpochStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lease_of(table: EpochTable, owner: str, partition: int, epoch: int, clock: Clock) -> Lease:
    return Lease(partition, epoch, lambda p, e: table.renew(p, e, owner), duration=6, clock=clock)


def test_a_new_epoch_is_recorded_before_it_is_handed_out():
    store = MemoryEpochStore()
    table = EpochTable(6, store=store)
    assert table.issue(0) == 1
    assert store.load_epochs() == {0: EpochRecord(issued=1)}
    assert table.issue(0) == 2, "an issued epoch is never handed out again"
    table.make_current(0, 2, "a")
    assert store.load_epochs() == {0: EpochRecord(issued=2, current=2, owner="a")}


def test_a_current_epoch_fences_the_old_owner_at_its_next_renewal():
    clock = Clock()
    table = EpochTable(6, clock=clock)
    table.make_current(0, table.issue(0), "a")
    old = lease_of(table, "a", 0, 1, clock)
    old.check()
    table.make_current(0, table.issue(0), "b")
    clock.now = 2.9  # the lease is less than half used: no renewal yet, still valid
    old.check()
    clock.now = 3.1  # half used: the renewal is refused
    with pytest.raises(FencedError, match="epoch 1 is no longer current"):
        old.check()
    assert old.refused and not old.valid
    with pytest.raises(FencedError):  # fenced for good, even without asking again
        old.check()


def test_only_the_owner_of_the_current_epoch_may_renew():
    table = EpochTable(6)
    table.make_current(0, table.issue(0), "a")
    assert table.renew(0, 1, "a")
    assert not table.renew(0, 1, "b"), "the same epoch from another actor"
    assert not table.renew(0, 0, "a") and not table.renew(0, 2, "a")
    assert not table.renew(1, 1, "a"), "a partition nobody was given"
    table.release(0)  # the owner confirmed it stopped for good
    assert not table.renew(0, 1, "a")
    assert table.current(0) == 1 and table.owner(0) is None


def test_epochs_outlive_the_table_and_stay_above_the_changelog_floor():
    store = MemoryEpochStore()
    first = EpochTable(6, store=store)
    first.make_current(0, first.issue(0), "a")
    first.issue(0)  # a move under way when the coordinator died
    second = EpochTable(6, store=store)  # the restarted coordinator
    assert second.restore() == {0: EpochRecord(issued=2, current=1, owner="a")}
    assert second.renew(0, 1, "a"), "the restored record knows the owner"
    assert second.issue(0) == 3
    # a new cluster: the record is gone, the changelog still shows epoch 7 on partition 0
    third = EpochTable(6, store=MemoryEpochStore())
    third.restore({0: 7, 1: 2})
    assert (third.issue(0), third.issue(1), third.issue(2)) == (8, 3, 1)
    with pytest.raises(GokaRayError, match="epochs only increase"):
        second.make_current(0, 1, "b")


def test_a_record_that_cannot_be_written_hands_out_nothing():
    class Broken(MemoryEpochStore):
        fail = False

        def save_epochs(self, records):  # type: ignore[no-untyped-def]
            if self.fail:
                raise ConnectionError("GCS unreachable")
            super().save_epochs(records)

    store = Broken()
    table = EpochTable(6, store=store)
    table.make_current(0, table.issue(0), "a")
    store.fail = True
    with pytest.raises(ConnectionError):
        table.issue(0)
    with pytest.raises(ConnectionError):
        table.make_current(0, 2, "b")
    assert table.record(0) == EpochRecord(issued=1, current=1, owner="a")
    assert table.renew(0, 1, "a"), "a failed write changed nothing"


def test_adoption_accepts_only_the_owner_and_epoch_the_record_names():
    store = MemoryEpochStore()
    table = EpochTable(6, store=store)
    table.make_current(0, table.issue(0), "a")
    restarted = EpochTable(6, store=store)
    restarted.restore({1: 4})
    assert restarted.adopt(0, 1, "a")
    assert not restarted.adopt(0, 1, "b"), "a stale owner of the same epoch"
    assert not restarted.adopt(0, 0, "a")
    # nothing recorded for partition 1: a live owner is taken at its word, unless it is below
    # the changelog's floor (an epoch that the changelog shows was superseded)
    assert not restarted.adopt(1, 3, "c")
    assert restarted.adopt(1, 4, "c")
    assert restarted.renew(1, 4, "c") and restarted.issue(1) == 5


def test_lease_counts_from_when_the_renewal_was_sent():
    clock = Clock()
    calls = []

    def slow_renew(partition: int, epoch: int) -> bool:
        calls.append(clock.now)
        clock.now += 1  # the answer takes a second
        return True

    lease = Lease(0, 1, slow_renew, 6, clock=clock)
    lease.check()
    clock.now = 3.9  # expiry is 0 + 6, renewal due after 3
    lease.check()
    assert calls == [0.0, 3.9]
    assert lease.valid


def test_an_owner_waits_without_writing_while_the_coordinator_is_unreachable():
    clock = Clock()
    reachable = [True]
    stopping = [False]
    waits = []

    def renew(partition: int, epoch: int) -> bool:
        if not reachable[0]:
            raise ConnectionError("coordinator restarting")
        return True

    def sleep(seconds: float) -> None:
        waits.append(clock.now)
        clock.now += seconds
        if len(waits) == 5:
            reachable[0] = True  # the coordinator is back

    lease = Lease(0, 1, renew, 6, clock=clock, sleep=sleep, stopped=lambda: stopping[0])
    lease.check()
    reachable[0] = False
    clock.now = 4.0  # renewal due; the coordinator does not answer but the lease still holds
    lease.check()
    assert not waits
    clock.now = 6.5  # the lease ran out: check() blocks until a renewal succeeds
    lease.check()
    assert len(waits) == 5 and lease.valid
    reachable[0] = False
    clock.now = 20.0
    stopping[0] = True  # a stopping owner gives up instead of waiting
    with pytest.raises(FencedError, match="expired while stopping"):
        lease.check()


def test_a_superseded_lease_ends_a_lease_after_its_last_accepted_renewal():
    clock = Clock()
    table = EpochTable(6, clock=clock)
    table.make_current(0, table.issue(0), "a")
    assert table.superseded_lease_end(0) is None, "a fresh partition had no owner"
    clock.now = 10.0
    assert table.renew(0, 1, "a")
    clock.now = 14.0  # the owner's loss is noticed 4 s after its last renewal
    table.make_current(0, table.issue(0), "b")
    assert table.superseded_lease_end(0) == 16.0, "not a full lease from the loss"
    assert not table.renew(0, 1, "a"), "and it can no longer renew"
    # the new owner never renewed before it was superseded in turn: the older end stands
    table.make_current(0, table.issue(0), "c")
    assert table.superseded_lease_end(0) == 16.0


def test_an_owner_that_never_renewed_holds_no_lease_to_wait_for():
    clock = Clock()
    table = EpochTable(6, clock=clock)
    table.make_current(0, table.issue(0), "a")
    clock.now = 30.0  # "a" never wrote: it never renewed
    table.make_current(0, table.issue(0), "b")
    assert table.superseded_lease_end(0) is None


def test_leases_an_earlier_coordinator_may_have_granted_count_from_when_it_stopped():
    clock = Clock()
    store = MemoryEpochStore()
    first = EpochTable(6, clock=clock, store=store)
    first.make_current(0, first.issue(0), "a")
    first.make_current(1, first.issue(1), "b")
    first.release(1)  # "b" confirmed it stopped for good
    clock.now = 50.0
    restarted = EpochTable(6, clock=clock, store=store)
    restarted.restore(granted_before=47.0)  # it started at 47, after the first one died
    restarted.make_current(0, restarted.issue(0), "c")
    assert restarted.superseded_lease_end(0) == 53.0
    restarted.make_current(1, restarted.issue(1), "d")
    assert restarted.superseded_lease_end(1) is None, "a released partition has no lease"
    # without a bound, a lease from now
    again = EpochTable(6, clock=clock, store=store)
    again.restore()
    again.make_current(0, again.issue(0), "e")
    assert again.superseded_lease_end(0) == 56.0
