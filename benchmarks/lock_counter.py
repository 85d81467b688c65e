"""Run a Python program with its lock acquisitions counted (a profiling build, for profile_node.py --counts).

    python benchmarks/lock_counter.py COUNT_FILE program.py [args...]

Before the program imports anything, ``threading.Lock``, ``threading.RLock`` and the lock
every ``Condition.wait`` allocates are replaced by wrappers that count each acquisition
(``with lock``, ``acquire()``, and so the locks inside ``Condition``, ``Event``,
``Semaphore``, ``queue.Queue``, ``Future`` and websocket-client's send lock). Locks made
in C (``queue.SimpleQueue``, the GIL) are not seen. When ``COUNT_FILE.want`` appears, the
counts so far are written to ``COUNT_FILE`` as JSON and the ``.want`` file is removed: the
caller takes a reading before and after a load and divides the difference by the tasks.
"""
from __future__ import annotations

import _thread
import itertools
import json
import os
import runpy
import sys
import threading
import time

_acquired = itertools.count()   # next() is atomic under the GIL: no lock of its own
_created = itertools.count()
_real_lock = _thread.allocate_lock
_real_rlock = threading.RLock


def _value(counter: "itertools.count[int]") -> int:
    return int(repr(counter)[6:-1])  # "count(N)"


class _Counted:
    __slots__ = ("_lock",)

    def __init__(self, lock) -> None:  # type: ignore[no-untyped-def]
        next(_created)
        self._lock = lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        next(_acquired)
        return self._lock.acquire(blocking, timeout)

    def __enter__(self) -> bool:
        next(_acquired)
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()


class _CountedRLock(_Counted):
    __slots__ = ()

    # Condition uses these when the lock has them (an RLock's ownership cannot be probed from outside).
    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def _release_save(self):  # type: ignore[no-untyped-def]
        return self._lock._release_save()

    def _acquire_restore(self, state) -> None:  # type: ignore[no-untyped-def]
        next(_acquired)
        self._lock._acquire_restore(state)


def _install() -> None:
    threading.Lock = lambda: _Counted(_real_lock())  # type: ignore[assignment,misc]
    threading._allocate_lock = threading.Lock  # type: ignore[attr-defined]  # Condition.wait's waiter
    threading.RLock = lambda *a, **k: _CountedRLock(_real_rlock(*a, **k))  # type: ignore[assignment,misc]


def _answer_readings(path: str) -> None:
    want = path + ".want"
    while True:
        time.sleep(0.1)  # no lock: the reader itself adds nothing to the counts
        if os.path.exists(want):
            with open(path + ".tmp", "w") as out:
                json.dump({"acquired": _value(_acquired), "created": _value(_created)}, out)
            os.replace(path + ".tmp", path)
            os.remove(want)


def main() -> None:
    count_file, program = sys.argv[1], sys.argv[2]
    _install()
    threading.Thread(target=_answer_readings, args=(count_file,), daemon=True, name="lock-counter").start()
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(program)))
    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main()
