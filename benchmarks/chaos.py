#!/usr/bin/env python3
"""A chaos run: a node with its ledger under steady load while random faults hit it. Asserts nothing.

    python benchmarks/chaos.py                        # 10 minutes, the node's default timing
    python benchmarks/chaos.py --seconds 60 --fast    # one minute, the test suite's fast timing
    python benchmarks/chaos.py --seed 8 --keep DIR    # another fault sequence; keep the logs in DIR

A LocalHub runs in this process in the Go server's dialect (``--dialect go``, the default: a read
deadline; a connection table that forgets a node after a dead path; the server's crash on a ping frame
that meets its own write, docs/protocol.md §4, counted as "hub crashes": target 0), or the seed's. The node is the real program in its own process (``python -m
octohub_sync --app benchmarks.chaos_app``; POSIX), with a fixed pc_id and its ledger in a temporary
OCTOHUB_STATE_DIR, behind a StallProxy whose address the hub's API hands out. Load: ``chaos`` tasks of
20 ms, ``--rate`` a second, at most ``--inflight`` unanswered. Every few seconds a random fault
(``--seed``): ``drop`` (the hub aborts the TCP connection), ``hub close`` (a close handshake the hub
starts), ``node close`` (the Go server's "replaced" notice: the node closes with a handshake and comes
back), ``dead path`` (the proxy stalls: missing pongs, later a re-registration), ``hub restart`` (the
WebSocket server down 0.5-3 s, the API answering 500; tasks and results kept), ``kill -9`` (started
again 0-2 s later, same ledger). The first four wait for a connection to hit. Then the load stops,
everything settles (until every task is answered or nothing changed for a while), the node gets
SIGTERM, and the script prints:

- sent, run (ids in the handler's journal), answered (ids with a result at the hub).
- lost: never answered; run, or written to a connection and never run, or never sent at all (the hub
  knew no connection of the node). Target 0.
- run twice: started more than once, except a re-run after kill -9 (at-least-once: the earlier run was
  in a killed process; "interrupted": it never ended), counted apart; and a re-run although the killed
  run's result was in the ledger (it reached the hub later). Target 0 for both.
- duplicates: result frames beyond the first, by what came before. The connection of the first copy
  ended without a close handshake (its confirmation was lost: expected), or with one the hub started
  (the node cannot know what the hub read after its close frame), or with one the node started
  (suspect: that handshake confirms everything before it); or both came on one connection because the
  hub re-sent the task, still without a result, when the node registered again, and the node answered
  it from its store; or none of these (suspect).
- failed answers by error kind (NodeBusy, NodeShuttingDown: answers, not losses), the wait from send
  to first answer (longest, p99, median), the faults, what the hub and the node's log saw. The node
  logs a re-run only if the task's start was on disk (written within 0.2 s, unless it must not re-run).

Timing. ``--fast``: pings every 0.3 s (0.2 s timeout), reconnects after 0.2-1 s, stable after 1 s, hub
read deadline 2.5 s, a fault every 1-3 s. Default: the node's defaults, except pings every 15 s (below
the hub's read deadline, as they must be) and OCTOHUB_HUB_READ_TIMEOUT=20 s, the hub's read deadline,
so that re-registrations happen within the run; a fault every 4-12 s. With the default backoff (5 s
doubling to 60 s, reset after 30 s up) the node spends a good part of the run waiting to reconnect.

When anything is off target, or with ``--keep DIR``, the work directory stays: node.log, hub.log,
journal.txt, state/ (the ledger), tasks.json (each task's sends, runs and answers, with the index of
the connection each went over in its "connections"; seconds from the start).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from harness import _die_with_parent  # noqa: E402
from octohub_sync._wire import signing  # noqa: E402
from octohub_sync.hub import LocalHub, messages  # noqa: E402
from tests.proxy import StallProxy  # noqa: E402

PC_ID = "node_chaos"
FAST = dict(ping_interval=0.3, ping_timeout=0.2, reconnect_interval=0.2, reconnect_max_interval=1.0,
            stable_after=1.0, connect_timeout=3.0, shutdown_timeout=5.0, hub_read_timeout=2.5)
DEFAULT = dict(ping_interval=15.0, hub_read_timeout=20.0)
KINDS = ("drop", "hub close", "node close", "dead path", "hub restart", "kill -9")
NEEDS_CONNECTION = KINDS[:4]


class ChaosHub(LocalHub):
    """The local hub, whose API hands out the address of the current proxy instead of its own."""

    proxy: StallProxy

    def ws_url(self, pc_id: str) -> str:
        query = signing.ws_query(self.key, pc_id, timestamp=int(self.now()))
        return f"ws://127.0.0.1:{self.proxy.port}/ws/node?{query}"


class Books:
    """What the hub sent and received for each task, with the connection (its record) each went over."""

    def __init__(self, hub: LocalHub) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.answers: dict[str, list[tuple[float, dict, dict]]] = defaultdict(list)  # (when, message, connection)
        self.deliveries: dict[str, list[tuple[float, dict]]] = defaultdict(list)  # (when, connection)
        self.hub_closed: set[int] = set()  # ids of the connection records hub.close_connections() ended
        state = hub._state  # noqa: SLF001 - a measurement hook, not an API
        receive, send = state.on_frame, state._send_quietly  # noqa: SLF001

        def on_frame(session, frame) -> None:
            receive(session, frame)
            if isinstance(frame, str) and '"task_result"' in frame:
                message = json.loads(frame)
                with self.lock:
                    self.first.setdefault(message["task_id"], time.monotonic())
                    self.answers[message["task_id"]].append((time.monotonic(), message, session.info))

        def send_quietly(session, frame) -> None:
            if isinstance(frame, str) and frame.startswith('{"type": "task"'):
                with self.lock:
                    self.deliveries[json.loads(frame)["task_id"]].append((time.monotonic(), session.info))
            send(session, frame)

        state.on_frame, state._send_quietly = on_frame, send_quietly  # noqa: SLF001


class Node:
    """The real program in its own process, started again with the same pc_id and ledger.

    Only the main thread starts it (the child's PR_SET_PDEATHSIG fires when the thread that started it
    ends): the fault thread kills it and sets when :meth:`check` starts it again.
    """

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.log = env, workdir / "node.log"
        self.argv = [sys.executable, "-m", "octohub_sync", "--env-file", str(workdir / "empty.env")]
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.restart_at: float | None = None  # while a killed node waits to be started again
        self.killed: set[int] = set()
        self.starts, self.exits = 0, Counter()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=HERE.parent, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.starts += 1

    def kill9(self, restart_after: float) -> bool:
        with self.lock:
            if self.proc is None or self.restart_at is not None:
                return False
            self.killed.add(self.proc.pid)
            self.proc.kill()  # SIGKILL on POSIX
            self.proc.wait()
            self.restart_at = time.monotonic() + restart_after
            return True

    def check(self) -> None:
        """(Main thread.) Start the node again once a kill's delay passed, or at once if it exited by itself."""
        with self.lock:
            if self.proc is None or self.proc.poll() is None or (self.restart_at or 0) > time.monotonic():
                return
            if self.restart_at is None:
                self.exits[self.proc.returncode] += 1
            self.restart_at = None
            self.start()

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the node's warm stop), SIGKILL if it lingers; the exit code."""
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return None if proc is None else proc.wait()


def strike(kind: str, hub: ChaosHub, node: Node, books: Books, rng: random.Random, stalled: list) -> bool:
    """Apply one fault; False if it had nothing to hit."""
    if kind == "drop":
        return hub.drop(PC_ID) > 0
    if kind == "hub close":
        with books.lock:
            books.hub_closed.update(id(s.info) for s in hub.sessions(PC_ID))
        return hub.close_connections(PC_ID) > 0
    if kind == "kill -9":
        return node.kill9(restart_after=rng.uniform(0, 2))
    if kind == "node close":
        try:
            hub.send_message(messages.replaced(hub.dialect), PC_ID)
        except ConnectionError:
            return False
    elif kind == "dead path":
        old, hub.proxy = hub.proxy, StallProxy(hub.ws_port)  # the next connection takes the new proxy
        old.stall()
        stalled.append((old, time.monotonic()))
    else:  # hub restart
        hub.api_fault = "500"
        hub.stop_ws()
        try:
            time.sleep(rng.uniform(0.5, 3))
            hub.start_ws()
        finally:
            hub.api_fault = None
    return True


def chaos(hub: ChaosHub, node: Node, books: Books, seed: int, gap: tuple[float, float], linger: float,
          stop: threading.Event, counts: Counter) -> None:
    """The fault thread: a random fault every ``gap`` seconds until ``stop``."""
    rng, stalled = random.Random(seed), []  # stalled proxies, closed once both ends surely gave up on them
    while not stop.wait(rng.uniform(*gap)):
        while stalled and stalled[0][1] + linger < time.monotonic():
            stalled.pop(0)[0].close()
        kind = rng.choice(KINDS)
        waited = time.monotonic()
        while kind in NEEDS_CONNECTION and not hub.wait_connected(PC_ID, 0.1):
            if stop.is_set() or time.monotonic() - waited > 90:
                break
        try:
            ready = kind not in NEEDS_CONNECTION or hub.connected(PC_ID)
            hit = ready and strike(kind, hub, node, books, rng, stalled)
        except Exception as exc:  # counted; the run goes on
            logging.getLogger("chaos").exception("fault %s failed", kind)
            hit = f"failed ({type(exc).__name__})"
        counts[kind, {True: "applied", False: "missed"}.get(hit, hit)] += 1
    for proxy, _ in stalled:
        proxy.close()


def journal_runs(path: Path) -> dict[str, list[list]]:
    """task_id -> its runs in journal order, each [pid, ended]."""
    runs: dict[str, list[list]] = defaultdict(list)
    for line in path.read_text().splitlines() if path.exists() else ():
        pid, what, tid = line.split()
        if what == "start":
            runs[tid].append([int(pid), False])
        else:
            next(run for run in reversed(runs[tid]) if run[0] == int(pid))[1] = True
    return runs


def duplicate_cause(tid: str, first: dict, conn: dict, books: Books) -> str:
    if conn is not first:
        return ("after an abrupt end (expected)" if first["close_code"] in (None, 1006) else
                "after a close the hub started" if id(first) in books.hub_closed else
                "after a close the node started (suspect)")
    if len(books.deliveries.get(tid, ())) > 1:
        return "hub re-sent the task, node answered from its store"
    return "twice on one connection (suspect)"


def report(args, settings: dict, hub: ChaosHub, books: Books, node: Node, runs: dict, counts: Counter,
           seconds: float, known: bool, code: int | None) -> bool:
    """Print the figures; True if anything is off target (lost, run twice, suspect duplicates)."""
    sent, answers = books.sent, books.answers
    unanswered = [t for t in sent if t not in answers]
    lost = {"run, never answered": [t for t in unanswered if t in runs],
            "written to a connection, never run": [t for t in unanswered if t not in runs and t in books.deliveries],
            "never sent (no connection)": [t for t in unanswered if t not in runs and t not in books.deliveries]}
    rerun, interrupted, twice, survived = [], 0, [], []
    for tid, r in runs.items():
        if len(r) > 1 and all(a[0] != b[0] and a[0] in node.killed for a, b in zip(r, r[1:])):
            rerun.append(tid)
            interrupted += not r[-2][1]
            if any(m.get("result", {}).get("pid") == r[-2][0] for _, m, _ in answers.get(tid, ())):
                survived.append(tid)
        elif len(r) > 1:
            twice.append(tid)
    dups = Counter(duplicate_cause(tid, copies[0][2], conn, books) for tid, copies in answers.items()
                   for _, _, conn in copies[1:])
    failed = Counter(copies[0][1].get("error", "").split(":")[0] for copies in answers.values()
                     if copies[0][1].get("status") != "completed")
    waits = sorted((books.first[t] - sent[t], t) for t in sent if t in books.first)
    log = node.log.read_text(errors="replace") if node.log.exists() else ""
    print(f"chaos run: {seconds:.0f} s of load, seed {args.seed}, {'fast' if args.fast else 'default'} timing "
          f"({' '.join(f'{k}={v:g}' for k, v in settings.items())}, the hub's read deadline too), "
          f"{args.rate:g} tasks/s, at most {args.inflight} in flight, {args.task_seconds * 1e3:g} ms each")
    rows = [("tasks sent", len(sent)), ("tasks run (distinct ids in the journal)", len(runs)),
            ("tasks answered (distinct ids with a result)", len(answers)), ("LOST", sum(map(len, lost.values())))]
    rows += [(f"  {why}", len(ids)) for why, ids in lost.items()]
    rows += [("RUN TWICE (not explained by a kill -9)", len(twice)),
             ("re-run after kill -9 (at-least-once)", len(rerun)), ("  its killed run interrupted", interrupted),
             ("  RE-RUN although the killed run's result was in the ledger", len(survived)),
             ("duplicate results", sum(dups.values()))]
    rows += [(f"  {cause}", n) for cause, n in sorted(dups.items())]
    rows += [("answers failed", sum(failed.values()))] + [(f"  {kind}", n) for kind, n in failed.most_common()]
    for label, value in rows:
        print(f"  {label:60} {value:>8}")
    if waits:
        print(f"  wait for the first answer: longest {waits[-1][0]:.2f} s ({waits[-1][1]}), p99 "
              f"{waits[int(0.99 * (len(waits) - 1))][0]:.2f} s, median {statistics.median(w for w, _ in waits):.3f} s")
    print("  faults: " + ", ".join(f"{k} {counts.pop((k, 'applied'), 0)}" for k in KINDS)
          + "".join(f"; {k} {how} {n}" for (k, how), n in sorted(counts.items())))
    closes = Counter(c["close_code"] and int(c["close_code"]) for c in hub.connections)
    print(f"  hub ({args.dialect} dialect): {len(hub.crashes)} CRASHES, {len(hub.connections)} connections (close codes {dict(closes)}), {len(hub.forgotten)} forgotten "
          f"by its table; at the end the node was {'' if known else 'NOT '}in it, {len(hub.pending)} tasks pending")
    print(f"  node: {node.starts} processes, {len(node.killed)} killed -9, exited by itself {dict(node.exits) or 0}, "
          f"last exit code {code}; its log: {log.count('re-registering')} re-registrations, "
          f"{log.count('no pong for')} missing-pong aborts, {log.count('(at-least-once)')} re-runs after a restart")
    for label, ids in [*lost.items(), ("run twice", twice), ("re-run although in the ledger", survived)]:
        if ids:
            print(f"  {label}: {', '.join(sorted(ids, key=lambda t: int(t[1:]))[:10])}")
    return bool(unanswered or twice or survived or hub.crashes
                or any(n for cause, n in dups.items() if "suspect" in cause))


def dump(path: Path, hub: ChaosHub, books: Books, runs: dict, t0: float) -> None:
    """Each task's sends, runs and answers (seconds from ``t0``; connections by index) as JSON."""
    index = {id(c): i for i, c in enumerate(hub.connections)}
    conns = [{**c, "opened": c["opened"] - t0, "closed": c["closed"] and c["closed"] - t0,
              "close_code": c["close_code"] and int(c["close_code"])} for c in hub.connections]
    tasks = {tid: {"sent": round(t - t0, 3), "runs": runs.get(tid, []),
                   "deliveries": [(round(w - t0, 3), index.get(id(c))) for w, c in books.deliveries.get(tid, ())],
                   "answers": [(round(w - t0, 3), index.get(id(c)), m.get("status"), m.get("result") or m.get("error"))
                               for w, m, c in books.answers.get(tid, ())]} for tid, t in books.sent.items()}
    path.write_text(json.dumps({"connections": conns, "tasks": tasks}, default=str, indent=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="load duration (default 600)")
    parser.add_argument("--fast", action="store_true", help="the test suite's fast timing (see the docstring)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault sequence (default 1)")
    parser.add_argument("--rate", type=float, default=100, help="tasks sent per second (default 100)")
    parser.add_argument("--inflight", type=int, default=100, help="most tasks without an answer (default 100)")
    parser.add_argument("--task-seconds", type=float, default=0.02, help="what each task sleeps (default 0.02)")
    parser.add_argument("--keep", metavar="DIR", help="keep the logs, journal, ledger and tasks.json in DIR")
    parser.add_argument("--dialect", choices=("go", "seed"), default="go",
                        help="the hub's dialect (default go, with the Go server's hazards)")
    args = parser.parse_args()
    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        parser.error(f"--keep {args.keep}: not empty (a ledger or journal left there would mix two runs)")
    settings = dict(FAST if args.fast else DEFAULT)
    deadline = settings["hub_read_timeout"]
    dead_after = settings["ping_interval"] + settings.get("ping_timeout", 10.0) + 1
    # Settled when nothing changed for as long as a dead path, the deadline, a re-registration and a backoff take.
    quiet = dead_after + deadline + max(2.0, deadline / 10) + settings.get("reconnect_max_interval", 60.0) + 10
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="octohub-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "empty.env").write_text("")
    logging.basicConfig(filename=workdir / "hub.log", level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    hub = ChaosHub(secrets.token_hex(16), dialect=args.dialect, read_deadline=deadline)
    node, counts, stop, bad = None, Counter(), threading.Event(), False
    try:
        hub.start()
        hub.proxy = StallProxy(hub.ws_port)
        books, begun = Books(hub), time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
        env.update({f"OCTOHUB_{k.upper()}": str(v) for k, v in {
            "server_host": "127.0.0.1", "server_port": hub.api_port, "signature_key": hub.key, "pc_id": PC_ID,
            "state_dir": workdir / "state", "app": "benchmarks.chaos_app", "log_level": "INFO", **settings}.items()})
        env["CHAOS_JOURNAL"] = str(workdir / "journal.txt")
        node = Node(env, workdir)
        node.start()
        if not hub.wait_connected(PC_ID, 30):
            raise RuntimeError(f"the node did not connect; its log:\n{node.log.read_text(errors='replace')}")
        faults = threading.Thread(target=chaos, name="chaos", args=(
            hub, node, books, args.seed, (1.0, 3.0) if args.fast else (4.0, 12.0), dead_after + deadline + 5,
            stop, counts))
        faults.start()
        start = last = time.monotonic()
        tokens, n = 0.0, 0
        while (now := time.monotonic()) < start + args.seconds:  # a token bucket, at most 0.1 s saved up
            tokens, last = min(tokens + (now - last) * args.rate, args.rate / 10 + 1), now
            for _ in range(min(int(tokens), args.inflight - (n - len(books.first)))):
                n, tokens = n + 1, tokens - 1
                books.sent[f"c{n}"] = time.monotonic()
                hub.send_task("chaos", {"seconds": args.task_seconds}, task_id=f"c{n}", pc_id=PC_ID)
            node.check()
            time.sleep(0.005)
        seconds = time.monotonic() - start
        stop.set()
        faults.join()
        seen, changed, settling = None, time.monotonic(), time.monotonic()
        while len(books.first) < n and min(changed + quiet, settling + 3 * quiet) > time.monotonic():
            now_seen = (len(books.first), sum(map(len, books.answers.values())))
            seen, changed = now_seen, (time.monotonic() if now_seen != seen else changed)
            node.check()
            time.sleep(0.2)
        time.sleep(2)  # late copies from the outbox
        known = hub.connected(PC_ID)
        code = node.stop(settings.get("shutdown_timeout", 30.0) + 10)
        runs = journal_runs(workdir / "journal.txt")
        bad = report(args, settings, hub, books, node, runs, counts, seconds, known, code)
        if bad or args.keep:
            dump(workdir / "tasks.json", hub, books, runs, begun)
    finally:
        stop.set()
        if node is not None:
            node.stop(5)
        if hasattr(hub, "proxy"):
            hub.proxy.close()
        hub.stop()
        if bad or args.keep:
            print(f"kept in {workdir}: node.log, hub.log, journal.txt, tasks.json, state/")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
