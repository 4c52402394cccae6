"""Write MovieLens 100K's ratings (u.data) sorted by time as Parquet, for examples/ml100k-bpr.yaml.

    python examples/ml100k_by_time.py [../shared/data/ml-100k/u.data] [runs/data/ml100k-by-time.parquet]

u.data is in no particular order; a leave-last-out split holds out each user's last event in
stream order, so the stream must be in time order (ties: the file's order). The real data stays
where it is: this writes a derived file under runs/ (not part of the repository).
"""

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ml-100k/u.data")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/data/ml100k-by-time.parquet")
table = pacsv.read_csv(
    src,
    read_options=pacsv.ReadOptions(column_names=["user", "item", "rating", "timestamp"]),
    parse_options=pacsv.ParseOptions(delimiter="\t"),
    convert_options=pacsv.ConvertOptions(
        column_types={"user": pa.string(), "item": pa.string(), "rating": pa.int32()}
    ),
)
table = table.append_column("row", pa.array(range(table.num_rows)))
table = table.sort_by([("timestamp", "ascending"), ("row", "ascending")]).drop_columns(["row"])
out.parent.mkdir(parents=True, exist_ok=True)
pq.write_table(table, out)
print(f"{table.num_rows:,} ratings by time: {out}")
