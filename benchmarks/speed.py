"""Speed of rnnlab's Elman, GRU and LSTM against PyTorch and Keras 3: `rnnlab bench` from a source checkout.

    python benchmarks/speed.py --scenarios S1,S3 --out /tmp/speed.json
    python benchmarks/speed.py --help

The benchmark itself is `rnnlab.bench` (so that `rnnlab bench` runs from an installed package); the
figures of the last run on a named machine are in benchmarks/README.md.
"""

from rnnlab.bench import main

if __name__ == "__main__":
    main()
