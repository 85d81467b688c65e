"""``stop()``'s order: one sequence, each step with the reason it comes where it does.

The node's parts are stopped in exactly the order of :data:`STOP_SEQUENCE`;
:func:`run` carries it out (client.py gives it one callable per step) and
:func:`outcome` says how the stop ended. ``tests/test_stop_sequence.py`` checks that a
real stop runs these steps, in this order, and what each one guarantees.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, NamedTuple

__all__ = ["STOP_SEQUENCE", "Step", "outcome", "run"]


class Step(NamedTuple):
    name: str
    why: str


#: The steps of ``stop()``, first to last.
STOP_SEQUENCE = (
    Step("say stopping", "systemd and the node's state say so first: probes report it for the whole stop"),
    Step("refuse new tasks", "from here a new task is answered NodeShuttingDown: the drain's work can only shrink"),
    Step("drain", "running and queued tasks get up to the timeout to finish; their results go out as usual"),
    Step("release the pool", "tasks that never started are answered NodeShuttingDown; the workers hand over "
                             "their last results (only once no handler runs: one past the drain is not waited for); each "
                             "worker thread tears down its resources on itself as it ends"),
    Step("stop children", "no isolated handler's child outlives the node; after the pool, so that no worker "
                          "starts another"),
    Step("settle the store", "results a ledger is still writing reach the delivery before its last sending"),
    Step("last sending", "the thread sending now finishes, then what is queued and the outbox go out: every "
                         "result before the close frame"),
    Step("stop the timers", "after the last results: a time limit's answer, posted to the send thread, still "
                            "goes out; no timer posts after this"),
    Step("stop the send thread", "it finishes what the timers posted (confirmations, progress, answers) "
                                 "before the connection closes"),
    Step("close the connection", "the watchdog stops and closes with a close handshake, after every write: a "
                                 "frame after our close frame would be lost"),
    Step("stop message handlers", "after the connection: no frame can bring another message"),
    Step("close the store", "after the connection: the hub's last confirmations remove results from the ledger"),
    Step("stop the metrics server", "last: /healthz and /readyz show the stop until it is over"),
)


def run(steps: Mapping[str, Callable[[], object]], log: logging.LoggerAdapter) -> None:
    """Call ``steps[name]()`` for every step of :data:`STOP_SEQUENCE`, in order.

    Raises:
        KeyError: ``steps`` lacks a step, or has one the sequence does not know (a bug of ours).
    """
    unknown = set(steps) - {step.name for step in STOP_SEQUENCE}
    if unknown:
        raise KeyError(f"stop steps not in STOP_SEQUENCE: {sorted(unknown)}")
    for step in STOP_SEQUENCE:
        log.debug("stop: %s", step.name)
        steps[step.name]()


def outcome(*, unfinished: list[str], overdue: list[str], turned_away: int, unsent: int, kept: bool,
            log: logging.LoggerAdapter) -> bool:
    """Say how the stop ended (after the last step); True if nothing was left undone.

    Args:
        unfinished: tasks still running when the drain ended.
        overdue: tasks answered TaskTimeout whose handlers still run (not among ``unfinished``).
        turned_away: NodeShuttingDown answers to tasks that never ran that could not go out.
        unsent: results not sent, those answers included.
        kept: a ledger keeps what was not sent for the next start.
    """
    if overdue:
        log.warning("stopped with %d handler(s) still running past their time limit (answered TaskTimeout; "
                    "their results are discarded): %s", len(overdue), ", ".join(overdue[:10]))
    # Answers to tasks that came during the stop and never ran (NodeShuttingDown) carry no work: one
    # that could not go out before the close frame loses nothing (docs/protocol.md §8, stopping).
    if turned_away:
        log.info("%d NodeShuttingDown answer(s) to tasks that never ran could not go out before the "
                 "connection closed: %s", turned_away,
                 "the ledger sends the answers after the next start's node_ready" if kept
                 else "not answered (the hub's own time limit covers them)")
    unsent -= turned_away
    if unsent:
        log.warning("stopped with %d result(s) not sent: %s", unsent, "the ledger keeps them for the next "
                    "start" if kept else "without a ledger (OCTOHUB_STATE_DIR) they are lost")
    return not unfinished and not overdue and not unsent
