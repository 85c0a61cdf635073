"""Data-parallel ranks that cannot meet (MASTER_ADDR unresolvable, rank 0 never started) end in one line naming
MASTER_ADDR/MASTER_PORT within a bounded time, having said what they wait for (issue 26); torch alone waited three
hours without a word."""

import socket

import pytest

from gentool import distributed
from gentool.distributed import World
from gentool.errors import GentoolError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("addr", ["127.0.0.1", "no-such-host.invalid"])
def test_a_rank_with_nobody_to_meet_gives_up_in_one_line(monkeypatch, capfd, addr):
    monkeypatch.setattr(distributed, "RENDEZVOUS_SECONDS", 2.0)
    monkeypatch.setattr(distributed, "NOTICE_SECONDS", 0.2)
    port = free_port()
    with pytest.raises(GentoolError) as caught:
        distributed.meet(World(1, 2), {"MASTER_ADDR": addr, "MASTER_PORT": str(port)})
    message = str(caught.value)
    assert f"MASTER_ADDR={addr} MASTER_PORT={port}" in message and "\n" not in message
    assert f"waiting for rank 0 at {addr}:{port}" in capfd.readouterr().err
