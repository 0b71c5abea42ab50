"""Watch a run, find its bottleneck in the report, give it more workers.

Run it in a terminal to see the live counters (``progress=True``), one line per
stage; in a notebook they show as a table.  The report then says which stage was
busy while the others waited on it.
"""

import hashlib
import json

from flowdsl import sink, source, transform


@source
def documents(n):
    for i in range(n):
        yield f"document {i} " * 50


@transform
def tokenize(text):
    return text.split()


@transform
def fingerprint(words):
    digest = b""
    for _ in range(300):  # deliberately slow: the stage we will find
        digest = hashlib.sha256(digest + " ".join(words).encode()).digest()
    return digest.hex()[:12]


@sink
class CountDistinct:
    def local_init(self):
        self.seen = set()

    def run(self, fingerprint):
        self.seen.add(fingerprint)

    def local_term(self):
        print(f"{len(self.seen)} distinct fingerprints")


if __name__ == "__main__":
    flow = documents(2000) >> tokenize >> fingerprint >> CountDistinct()
    report = flow.run(progress=True)
    print(report)
    slowest = report.bottleneck
    print(
        f"bottleneck: {slowest}, waiting for it: "
        f"{report['tokenize'].blocked_out_seconds:.2f} s upstream, "
        f"{report['CountDistinct'].blocked_in_seconds:.2f} s downstream"
    )

    faster = documents(2000) >> tokenize >> fingerprint.options(workers=2) >> CountDistinct()
    second = faster.run(progress=True)
    print(f"with 2 workers on {slowest}: {report.seconds:.2f} s -> {second.seconds:.2f} s")
    print(json.dumps(second.to_dict()["stages"][slowest]))
    with open("report.gv", "w") as f:  # render with: dot -Tsvg report.gv -o report.svg
        f.write(second.diagram().source)
    print("wrote report.gv")
