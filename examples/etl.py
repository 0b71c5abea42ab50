"""A small ETL job over CSV files: two sources fan in, two sinks fan out.

    read north/*.csv ─┐                     ┌─> totals per product (JSON)
                      ├─ merge ─> clean x2 ─┤
    read south/*.csv ─┘                     └─> cleaned rows (CSV)

The script writes a few messy CSV files to a temporary directory first.  Rows
that cannot be parsed are dropped by ``clean`` (it returns ``None``), which runs
in two worker processes.  Sinks keep their state in the worker, so they write
their results to files in ``local_term``; the driver reads them back at the end.
"""

import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from flowdsl import merge, sink, source, transform

RAW = {
    "north/2024-01.csv": """date,store,product,quantity,unit_price
2024-01-03,N1,apples,12,0.50
2024-01-03,N1, Pears ,4,0.80
2024-01-04,N2,apples,not a number,0.50
2024-01-05,N2,plums,7,1.20
""",
    "north/2024-02.csv": """date,store,product,quantity,unit_price
2024-02-01,N1,APPLES,3,0.55

2024-02-02,N2,pears,10,0.75
""",
    "south/2024-01.csv": """date,store,product,quantity,unit_price
2024-01-02,S1,plums,5,1.10
2024-01-02,S1,apples,-1,0.50
2024-01-09,S2,pears,6,0.80
""",
}

FIELDS = ["date", "store", "product", "quantity", "unit_price", "revenue"]


def write_input(root):
    for name, text in RAW.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@source
def read_rows(folder):
    """Every row of every CSV file of ``folder``, as a dict with its origin."""
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield {**row, "origin": f"{path.parent.name}/{path.name}:{reader.line_num}"}


@transform(workers=2)
def clean(row):
    """A typed, normalised row, or None (dropped) when the row is invalid."""
    try:
        quantity = int(row["quantity"])
        unit_price = float(row["unit_price"])
    except (TypeError, ValueError):
        print(f"skipping {row['origin']}: bad number", file=sys.stderr)
        return None
    if quantity <= 0:
        print(f"skipping {row['origin']}: quantity {quantity}", file=sys.stderr)
        return None
    return {
        "date": row["date"].strip(),
        "store": row["store"].strip(),
        "product": row["product"].strip().lower(),
        "quantity": quantity,
        "unit_price": unit_price,
        "revenue": round(quantity * unit_price, 2),
    }


@sink
class Totals:
    """Aggregates quantity and revenue per product."""

    def __init__(self, path):
        self.path = path

    def local_init(self):
        self.totals = defaultdict(lambda: {"quantity": 0, "revenue": 0.0})

    def run(self, row):
        total = self.totals[row["product"]]
        total["quantity"] += row["quantity"]
        total["revenue"] = round(total["revenue"] + row["revenue"], 2)

    def local_term(self):
        with open(self.path, "w") as f:
            json.dump(dict(sorted(self.totals.items())), f, indent=2)


@sink
class WriteCsv:
    """Writes the rows to one CSV file."""

    def __init__(self, path):
        self.path = path

    def local_init(self):
        self.file = open(self.path, "w", newline="")  # noqa: SIM115 - closed in local_term
        self.writer = csv.DictWriter(self.file, fieldnames=FIELDS)
        self.writer.writeheader()

    def run(self, row):
        self.writer.writerow(row)

    def local_term(self):
        self.file.close()


def main(root):
    write_input(root)
    totals, cleaned = root / "totals.json", root / "cleaned.csv"

    rows = merge(
        read_rows(root / "north").options(name="north"),
        read_rows(root / "south").options(name="south"),
    )
    flow = rows >> clean >> [Totals(totals), WriteCsv(cleaned)]
    report = flow.run()

    print(report)
    print(f"{report['clean'].items_in} rows read, {report['clean'].items_out} kept")
    print("totals:", json.loads(totals.read_text()))
    print(cleaned.read_text(), end="")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
