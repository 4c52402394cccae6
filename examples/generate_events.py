"""Write the synthetic event log used by the demo: train/test/items Parquet files.

    python examples/generate_events.py data/events [--events 1000000] [--seed 0]

Users rate items (stars 1..5) from planted low-rank preferences, genre affinities and a slow
drift in time; events are sorted by time and the last 10% are the test set.
"""

import argparse

from streamfm.datasets import write_event_log

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("out", help="output folder")
parser.add_argument("--events", type=int, default=1_000_000)
parser.add_argument("--users", type=int, default=20_000)
parser.add_argument("--items", type=int, default=5_000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
paths = write_event_log(
    args.out, n_events=args.events, n_users=args.users, n_items=args.items, seed=args.seed
)
for name, path in paths.items():
    print(f"{name}: {path}")
