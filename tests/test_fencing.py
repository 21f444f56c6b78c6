from __future__ import annotations

import pytest

from goka_ray import FencedError
from goka_ray.control.fencing import EpochTable, Lease


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bumped_epoch_fences_the_old_owner_and_waits_out_its_lease():
    clock = Clock()
    table = EpochTable(lease_duration=6, clock=clock)
    assert table.bump(0, fresh=True) == 1 and table.wait_usable(0) == 0
    old = Lease(0, 1, table.renew, 6, clock=clock)
    old.check()
    assert table.bump(0) == 2
    assert table.wait_usable(0) == 6  # the new owner may not write before the old lease ends
    clock.now = 4  # half the lease used: the old owner tries to renew and is refused
    with pytest.raises(FencedError, match="epoch 1 is no longer current"):
        old.check()
    table.released(0)
    assert table.wait_usable(0) == 0


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
