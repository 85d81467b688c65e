"""A simulated Windows for octohub_sync's checks: put this folder on PYTHONPATH.

Python imports this module at start-up (site.py). It takes away what CPython on Windows does not
have: the modules fcntl, termios, pwd and grp (importing one raises ImportError, as there), and
socket.AF_UNIX and signal.SIGHUP. sys.platform stays what it is: the simulation finds a POSIX-only
name used without a guard; what only Windows has (msvcrt, SetConsoleCtrlHandler) is not here.
"""
import signal
import socket
import sys

HIDDEN_MODULES = ("fcntl", "termios", "pwd", "grp")

_AF_UNIX = socket.AF_UNIX
_socketpair = socket.socketpair


def _stdlib_socketpair(family=None, type=socket.SOCK_STREAM, proto=0):
    # The standard library's own socketpair() (asyncio's self-pipe) reads AF_UNIX as a default; Windows's
    # has its own loopback version. Keep the standard library whole: only our code is under test.
    return _socketpair(_AF_UNIX if family is None else family, type, proto)


for _name in HIDDEN_MODULES:
    sys.modules[_name] = None  # "import fcntl" now raises ImportError (ModuleNotFoundError's parent)
del socket.AF_UNIX
socket.socketpair = _stdlib_socketpair
if hasattr(signal, "SIGHUP"):
    del signal.SIGHUP
