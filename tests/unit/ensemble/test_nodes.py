"""Members spread over nodes, and the board the node launchers post their notes on."""

import socket

import pytest

from scaletrain.ensemble.nodes import Nodes, node_share
from scaletrain.errors import UserError


def _nodes(nnodes: int, rank: int) -> Nodes:
    return Nodes(nnodes=nnodes, node_rank=rank, endpoint="127.0.0.1:1", timeout_s=5)


def test_members_fill_every_slot_of_every_node_once():
    shares = [node_share(7, _nodes(2, rank), slots=2) for rank in (0, 1)]
    assert shares == [[0, 1, 4, 5], [2, 3, 6]]  # slots 0-1 on node 0, 2-3 on node 1
    shares = [node_share(2, _nodes(3, rank), slots=1) for rank in (0, 1, 2)]
    assert shares == [[0], [1], []]  # more slots than members: node 2 idles


def test_board_notes_travel_from_node_to_node_and_waiting_ends():
    from scaletrain.parallel.node_board import NodeBoard

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = NodeBoard(f"127.0.0.1:{port}", is_host=True, timeout_s=10)
    other = NodeBoard(f"127.0.0.1:{port}", is_host=False, timeout_s=10)
    assert other.read("plan") is None
    host.post("plan", {"token": "abc", "nproc": 2})
    assert other.wait_any(["node/1", "plan"], timeout_s=5) == ("plan", {"token": "abc", "nproc": 2})
    with pytest.raises(UserError, match="nothing from node 0 within 0.1 s"):
        other.wait_any(["node/1"], timeout_s=0.1)
