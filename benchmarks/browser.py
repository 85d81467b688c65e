#!/usr/bin/env python3
"""A browser per worker against a browser per task, and the browser processes each ending leaves. Asserts nothing.

    python benchmarks/browser.py              # a few minutes
    python benchmarks/browser.py --quick

Needs Debian's ``chromium`` and ``chromium-driver`` and Selenium (``pip install -e ".[browser]"``).
One LocalHub and a page server run in this process; the node is the real program (``python
run_node.py``, benchmarks/browser_app.py) in its own process. Printed: tasks/s loading a local page
with a warm browser per worker (``visit``) and with a browser started per task (``visit_cold``),
same run; the node's RSS with 4 warm browsers (alone, and with its browser processes); the time
from a hard stop (OCTOHUB_CANCEL_GRACE) of an isolated task to its answer and to its last browser
process gone; and the browser processes left 10 s after each ending: stop, recycle, hard stop, kill -9.
Browser processes are found by a token in their environment, inherited from the node.
"""
from __future__ import annotations

import argparse
import http.server
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

PAGE = b"<html><head><title>bench</title></head><body>" + b"<p>octohub</p>" * 200 + b"</body></html>"


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        try:
            self.wfile.write(PAGE)
        except BrokenPipeError:
            pass  # a browser the hard stop killed while it loaded the page

    def log_message(self, *args: object) -> None:
        pass


def browsers(token: str) -> list[psutil.Process]:
    """Chromium and chromedriver processes started under this run's node (by the token in their environment)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if (proc.info["name"] or "").startswith("chrom") and proc.environ().get("OCTOHUB_BENCH_TOKEN") == token:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def settle(token: str, seconds: float = 10.0) -> int:
    """Browser processes still there after up to ``seconds`` (0 as soon as none is)."""
    deadline = time.monotonic() + seconds
    while browsers(token) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the process table: nothing to wait on
    return len(browsers(token))


def run_tasks(hub, pc_id: str, task_type: str, url: str, total: int, inflight: int) -> float:
    """tasks/s of ``total`` tasks, ``inflight`` at a time."""
    began = time.perf_counter()
    pending: list[str] = []
    sent = 0
    while sent < total or pending:
        while sent < total and len(pending) < inflight:
            pending.append(hub.send_task(task_type, {"url": url}, pc_id=pc_id))
            sent += 1
        result = hub.wait_result(pending.pop(0), timeout=120)
        assert result["status"] == "completed", result
    return total / (time.perf_counter() - began)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
    from octohub_sync.hub import LocalHub

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warm_n, cold_n = (40, 12) if args.quick else (200, 40)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, name="bench-page", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    hub = LocalHub(secrets.token_hex(16)).start()
    print(f"Python {sys.version.split()[0]} on {platform.system()}, {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.2f}")
    try:
        with tempfile.TemporaryDirectory(prefix="octohub-bench-browser-") as workdir:
            env_file = str(Path(workdir) / "empty.env")
            Path(env_file).write_text("")

            def node(name: str) -> tuple:
                token = secrets.token_hex(8)
                subject = harness.node_subject(hub, name, env_file, workdir, app="browser_app", max_workers=4,
                                               cancel_grace=0.5, log_level="ERROR")
                subject.env["OCTOHUB_BENCH_TOKEN"] = token
                subject.start().wait_ready(hub, 30)
                return subject, token

            subject, token = node("browser")
            pc = subject.pc_id
            run_tasks(hub, pc, "visit", url, 8, 4)  # four warm browsers
            warm = run_tasks(hub, pc, "visit", url, warm_n, 4)
            cold = run_tasks(hub, pc, "visit_cold", url, cold_n, 4)
            print(f"load a local page, 4 workers: browser per worker {warm:.1f} tasks/s ({warm_n} tasks), "
                  f"browser per task {cold:.1f} tasks/s ({cold_n} tasks): x{warm / cold:.1f}")
            tree = [p for p in subject.ps.children(recursive=True) if p.name().startswith("chrom")]
            pss = sum(p.memory_full_info().pss for p in [subject.ps] + tree)  # shared pages counted once
            print(f"RSS with 4 warm browsers: the node {subject.ps.memory_info().rss / 1048576:.0f} MB; the node and "
                  f"its {len(tree)} browser processes {pss / 1048576:.0f} MB (PSS)")

            tid = hub.send_task("hold", {"url": url}, pc_id=pc)
            hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("loaded"), timeout=60)
            child = int(hub.progress[tid][-1]["message"].split()[-1])
            held = psutil.Process(child).children(recursive=True)
            began = time.perf_counter()
            hub.cancel(tid, "bench")
            answer = hub.wait_result(tid, timeout=30)
            answered = time.perf_counter() - began
            deadline = time.monotonic() + 10
            while any(alive(p) for p in held) and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the process table: nothing to wait on
            gone = time.perf_counter() - began
            left = sum(alive(p) for p in held)
            print(f"hard stop (grace 0.5 s): task_cancel -> answer {answered * 1e3:.0f} ms "
                  f"({answer['error'][:40]}), -> last of its {len(held)} browser processes gone "
                  f"{gone * 1e3:.0f} ms; left: {left}")

            threads = {p.pid for p in browsers(token)}  # the workers' browsers, which stay
            result = hub.wait_result(hub.send_task("visit_once", {"url": url}, pc_id=pc), timeout=60)
            assert result["status"] == "completed", result
            deadline = time.monotonic() + 10
            while {p.pid for p in browsers(token)} - threads and time.monotonic() < deadline:
                time.sleep(0.1)  # polling the process table: the recycled child tears down after the answer
            print(f"left 10 s after a recycle (max_tasks_per_child=1): "
                  f"{len({p.pid for p in browsers(token)} - threads)} browser processes of the recycled child")
            hub.wait_result(hub.send_task("screenshot", {"url": url}, pc_id=pc), timeout=60)
            before = len(browsers(token))
            subject.stop(timeout=30)
            print(f"left after the node's stop (SIGTERM): {settle(token)} of {before} browser processes")

            subject, token = node("killed")
            run_tasks(hub, subject.pc_id, "visit", url, 8, 4)
            hub.wait_result(hub.send_task("screenshot", {"url": url}, pc_id=subject.pc_id), timeout=60)
            isolated = [p.pid for p in browsers(token) if child_of_isolated(p, subject)]
            before = len(browsers(token))
            subject.proc.kill()
            subject.proc.wait(10)
            left = settle(token)
            still = [p for p in browsers(token)]
            print(f"left 10 s after kill -9 of the node: {left} of {before} browser processes "
                  f"({sum(p.pid in isolated for p in still)} of the isolated child's {len(isolated)})")
            for proc in still:  # ours: started by this run's node
                proc.kill()
            subject.stop()
    finally:
        hub.stop()
        server.shutdown()


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def child_of_isolated(proc: psutil.Process, subject) -> bool:
    """Whether ``proc`` descends from one of the node's isolated children (a python child of the node)."""
    try:
        for parent in proc.parents():
            if parent.ppid() == subject.proc.pid and parent.name().startswith("python"):
                return True
    except psutil.NoSuchProcess:
        pass
    return False


if __name__ == "__main__":
    main()
