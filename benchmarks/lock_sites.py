#!/usr/bin/env python3
"""Lock acquisitions per echo task, by the call site that took them: where the node's locking goes.

    python benchmarks/lock_sites.py [TASKS]        # default 2000 tasks, MAX_WORKERS=16

Replaces ``threading.Lock`` before the node is imported (so Conditions, Events, queues and
websocket-client's lock are counted too; locks made in C are not), runs a real node against a
LocalHub in this process, and prints the node's side: acquisitions per task, per site. Counts,
not timings: they do not depend on the machine's load. Asserts nothing.
"""
import _thread, collections, sys, threading
sites = collections.Counter()
_real = _thread.allocate_lock
class Counted:
    __slots__ = ("_l",)
    def __init__(self): self._l = _real()
    def _site(self):
        f = sys._getframe(2)
        while f and ("threading.py" in f.f_code.co_filename or "queue.py" in f.f_code.co_filename):
            f = f.f_back
        return f"{f.f_code.co_filename.split('site-packages/')[-1].split('main/')[-1]}:{f.f_code.co_name}" if f else "?"
    def acquire(self, blocking=True, timeout=-1):
        sites[self._site()] += 1
        return self._l.acquire(blocking, timeout)
    def __enter__(self):
        sites[self._site()] += 1
        return self._l.acquire()
    def release(self): self._l.release()
    def __exit__(self, *a): self._l.release()
    def locked(self): return self._l.locked()
    def _at_fork_reinit(self): self._l._at_fork_reinit()
    def _is_owned(self):
        if self._l.acquire(False):
            self._l.release(); return False
        return True
threading.Lock = Counted
threading._allocate_lock = Counted
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from octohub_sync.hub import LocalHub
from octohub_sync import NodeWebSocketClient
KEY = "k" * 32
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
with LocalHub(KEY) as hub:
    node = NodeWebSocketClient(server_host="127.0.0.1", server_port=hub.api_port, signature_key=KEY,
                               env_file=False, ws_port=hub.ws_port, pc_id="node_perf", state_dir="off", max_workers=16)
    node.start(); assert node.wait_connected(10)
    for i in range(200): hub.wait_result(hub.send_task("echo", {"i": i}), 10)
    sites.clear()
    ids = [hub.send_task("echo", {"i": i}) for i in range(N)]
    for t in ids: hub.wait_result(t, 30)
    snap = dict(sites)
    node.stop()
node_sites = {k: v for k, v in snap.items() if "octohub_sync/hub" not in k and "websockets/" not in k}
total = sum(node_sites.values())
print(f"node-side lock acquisitions per task: {total / N:.1f}")
for k, v in sorted(node_sites.items(), key=lambda kv: -kv[1])[:30]:
    print(f"  {v / N:6.2f}  {k}")
