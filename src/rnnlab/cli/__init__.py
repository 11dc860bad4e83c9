"""`rnnlab` on the command line. Each module here registers its commands on `app`:

    train.py    train, evaluate, predict           (tweets and any labelled text)
    explain.py  explain, inspect                   (units vs timesteps)
    elman.py    demo, and train elman:NAME         (Elman's 1990 experiments)
    tune.py     tune                               (sweeps over the number of units, Optuna)
    bench.py    bench                              (speed against PyTorch and Keras)
    serve.py    serve                              (the playground and runs in a browser; the JSON API)
"""

from rnnlab.cli import bench, elman, explain, serve, train, tune  # noqa: F401  (registers the commands)
from rnnlab.cli.app import app


def main() -> None:
    from rnnlab import compile_cache

    compile_cache.enable()  # a second run of the same shapes loads its programs (RNNLAB_COMPILE_CACHE=0: off)
    app()
