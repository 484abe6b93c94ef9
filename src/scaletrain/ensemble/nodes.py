"""An ensemble on several nodes (`--nnodes N`, static): every node runs the same
`scaletrain train CONFIG --nnodes N --node-rank R --rdzv-endpoint HOST:PORT --nproc K`, with
the ensemble directory on a filesystem all nodes share, at the same path.

Node 0 prepares the directory, writes a token file into it and posts its plan on a
`NodeBoard` (a TCPStore at HOST:PORT); node R checks that it sees the token (else the
directory is not shared), trains its members, posts their outcomes and exits. Node 0 trains
its own, waits for every node's outcomes, then combines, evaluates and writes the summary.
Members are spread over all N x S slots (S = K / member_nproc member runs at once per node):
member i goes to slot i mod (N x S), on node slot // S.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from scaletrain.config import Config, load_run_config, member_configs
from scaletrain.ensemble.jobs import MemberJobs, member_slots, run_member_jobs
from scaletrain.ensemble.members import MemberOutcome, train_member
from scaletrain.ensemble.parallel import train_in_parallel
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text

TOKEN_FILE = "node_token"  # node 0 writes it; every node must read the same


@dataclass(frozen=True)
class Nodes:
    nnodes: int
    node_rank: int
    endpoint: str  # HOST:PORT of node 0
    timeout_s: int  # how long a node waits for node 0


def check_nodes_method(cfg: Config, nodes: Nodes) -> None:
    """Sequential ensembles have nothing to spread over nodes."""
    if cfg.ensemble.method in ("boosting", "snapshot"):
        what = (
            "runs its rounds one after another"
            if cfg.ensemble.method == "boosting"
            else ("is one run")
        )
        raise UserError(
            f"--nnodes {nodes.nnodes}: ensemble.method `{cfg.ensemble.method}` {what}; train "
            "it on one node (--nproc, ensemble.member_nproc)"
        )


def node_share(num_runs: int, nodes: Nodes, *, slots: int) -> list[int]:
    """The members node `nodes.node_rank` trains: those whose slot is one of its S."""
    total = nodes.nnodes * slots
    return [index for index in range(num_runs) if (index % total) // slots == nodes.node_rank]


def train_share(
    root: Path, members: list[Config], indices: list[int], *, nproc: int, member_nproc: int
) -> list[MemberOutcome]:
    """This node's members: as multi-process jobs, on spawned workers, or here in turn."""
    if member_nproc > 1:
        slots = min(member_slots(nproc, member_nproc), max(1, len(indices)))
        return run_member_jobs(MemberJobs(root, member_nproc, slots), members, indices)
    if nproc > 1 and len(indices) > 1:
        return train_in_parallel(root, nproc=min(nproc, len(indices)), indices=indices)
    outcomes = []
    for index in indices:
        outcomes.append(train_member(members[index], index))
        if outcomes[-1].exit_code:  # stopped by a signal
            break
    return outcomes


def _slots(nproc: int, member_nproc: int) -> int:
    """Member runs at once on one node."""
    return member_slots(nproc, member_nproc) if member_nproc > 1 else nproc


class HostNode:
    """Node 0: hosts the board, publishes the plan, gathers every node's outcomes."""

    def __init__(self, nodes: Nodes):
        from scaletrain.parallel.node_board import NodeBoard

        self.nodes = nodes
        self.board = NodeBoard(nodes.endpoint, is_host=True, timeout_s=nodes.timeout_s)

    def publish(self, root: Path, *, nproc: int) -> None:
        token = secrets.token_hex(16)
        atomic_write_text(root / TOKEN_FILE, token)
        self.board.post("plan", {"token": token, "nproc": nproc})

    def abort(self, message: str) -> None:
        self.board.post("plan", {"error": message})

    def train(self, root: Path, members: list[Config], *, nproc: int, member_nproc: int):
        """Node 0's members, then every other node's outcomes (each tagged with its node)."""
        indices = node_share(len(members), self.nodes, slots=_slots(nproc, member_nproc))
        outcomes = train_share(root, members, indices, nproc=nproc, member_nproc=member_nproc)
        if any(outcome.exit_code for outcome in outcomes):
            return outcomes  # stopped here: do not wait for the others (resume gathers them)
        for rank in range(1, self.nodes.nnodes):
            _, note = self.board.wait_any([f"node/{rank}"])
            if "error" in note:
                raise UserError(f"node {rank}: {note['error']}")
            outcomes += [MemberOutcome(**outcome) for outcome in note["outcomes"]]
        return sorted(outcomes, key=lambda outcome: outcome.index)


def join_ensemble(root: Path, nodes: Nodes, *, nproc: int) -> int:
    """Node R > 0: wait for node 0's plan, train this node's members, post their outcomes."""
    from scaletrain.parallel.node_board import NodeBoard

    board = NodeBoard(nodes.endpoint, is_host=False, timeout_s=nodes.timeout_s)
    _, plan = board.wait_any(["plan"], timeout_s=nodes.timeout_s)
    key = f"node/{nodes.node_rank}"
    try:
        outcomes = _train_joined(root, nodes, plan, nproc=nproc)
    except UserError as error:
        board.post(key, {"error": str(error).splitlines()[0]})
        raise
    except KeyboardInterrupt:  # node 0 must not wait for a note that never comes
        board.post(key, {"error": "interrupted (Ctrl-C); its finished members are kept"})
        raise
    notes = [dataclasses.replace(o, node=nodes.node_rank).__dict__ for o in outcomes]
    board.post(key, {"outcomes": notes})
    names = ", ".join(f"m{outcome.index}" for outcome in outcomes) or "none"
    print(f"node {nodes.node_rank}: members {names} done; node 0 combines them", file=sys.stderr)
    return next((outcome.exit_code for outcome in outcomes if outcome.exit_code), 0)


def _train_joined(root: Path, nodes: Nodes, plan: dict, *, nproc: int) -> list[MemberOutcome]:
    if "error" in plan:
        raise UserError(f"node 0 stopped: {plan['error']}")
    token = root / TOKEN_FILE
    if not token.is_file() or token.read_text().strip() != plan["token"]:
        raise UserError(
            f"{token}: node {nodes.node_rank} does not see node 0's token file; the ensemble "
            "directory (run.out_dir) must be on a filesystem all nodes share, at the same path"
        )
    if plan["nproc"] != nproc:
        raise UserError(
            f"--nproc {nproc}: node 0 runs --nproc {plan['nproc']}; give every node the same"
        )
    cfg = load_run_config(root / "config.yaml")  # node 0's, resolved
    check_nodes_method(cfg, nodes)
    members = member_configs(cfg)
    member_nproc = cfg.ensemble.member_nproc
    indices = node_share(len(members), nodes, slots=_slots(nproc, member_nproc))
    return train_share(root, members, indices, nproc=nproc, member_nproc=member_nproc)
