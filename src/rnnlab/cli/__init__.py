"""`rnnlab` on the command line. Each module here registers its commands on `app`:

    train.py    train, evaluate, predict           (tweets and any labelled text)
    explain.py  explain, inspect                   (units vs timesteps)
    elman.py    demo, and train elman:NAME         (Elman's 1990 experiments)
    tune.py     tune                               (sweeps over the number of units, Optuna)
    bench.py    bench                              (speed against PyTorch and Keras)
    serve.py    serve                              (the playground and runs in a browser; the JSON API)
"""

import atexit
import os
import sys
import threading

from rnnlab.cli import bench, elman, explain, serve, train, tune  # noqa: F401  (registers the commands)
from rnnlab.cli.app import app


def main() -> None:
    """The `rnnlab` command. A command that ends (with any exit code) ends the process at once after its
    threads and exit handlers: every file it writes is whole and synced before it returns, so the
    interpreter's teardown of JAX and its modules (most of a second) is skipped. An exception that escapes
    a command ends the process as Python does."""
    from rnnlab import compile_cache

    compile_cache.enable()  # a second run of the same shapes loads its programs (RNNLAB_COMPILE_CACHE=0: off)
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None), as Python reads them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    for thread in threading.enumerate():  # what Python joins before exiting
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (a closed pipe) or a stream closed
            code = code or 1
    os._exit(code)
