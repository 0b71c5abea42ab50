"""Crawl a small web site concurrently, parse its pages on two CPU workers.

    page ids ─> fetch (async, 32 in flight) ─> parse x2 ─> index (JSON lines)

The script first starts a web server on localhost that serves 200 generated
pages, each after 50 ms (a slow site).  ``fetch`` is an ``async def`` stage
with ``concurrency=32``: one aiohttp session per worker, opened in
``local_init`` and closed in ``local_term``, and 32 requests in flight at once,
so the crawl takes about 200 / 32 * 50 ms instead of 200 * 50 ms.  ``parse``
is ordinary CPU work in two processes; ``index`` writes one JSON line per page.

Needs aiohttp (``pip install 'flowdsl[io]'``).
"""

import asyncio
import json
import re
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from flowdsl import sink, source, transform

PAGES = 200
WORDS = ["river", "stone", "cloud", "lantern", "meadow", "copper", "willow", "harbor"]


def page(i: int) -> str:
    words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 40))
    return f"<html><head><title>Page {i}</title></head><body><p>{words}</p></body></html>"


def serve_site(ready: threading.Event, address: list) -> None:
    """The slow web site, on an event loop of its own (a thread of this script)."""

    async def answer(request):
        await asyncio.sleep(0.05)
        return web.Response(text=page(int(request.match_info["i"])), content_type="text/html")

    async def main():
        app = web.Application()
        app.router.add_get("/page/{i}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address.append(site._server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@source
def page_ids(n):
    yield from range(n)


@transform(concurrency=32)
class Fetch:
    def __init__(self, base):
        self.base = base

    async def local_init(self):  # once per worker, on its event loop
        import aiohttp

        self.session = aiohttp.ClientSession()

    async def run(self, i):
        async with self.session.get(f"{self.base}/page/{i}") as response:
            response.raise_for_status()
            return i, await response.text()

    async def local_term(self):  # also when the flow fails or is interrupted
        await self.session.close()


@transform(workers=2)
def parse(fetched):
    i, html = fetched
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    words = re.sub(r"<[^>]+>", " ", html).split()
    return {"page": i, "title": title, "words": len(words), "top": max(set(words), key=words.count)}


@sink
class Index:
    def __init__(self, path):
        self.path = path

    def local_init(self):
        self.file = open(self.path, "w")  # noqa: SIM115 (closed in local_term)

    def run(self, record):
        self.file.write(json.dumps(record) + "\n")

    def local_term(self):
        self.file.close()


def main():
    ready, address = threading.Event(), []
    threading.Thread(target=serve_site, args=(ready, address), daemon=True).start()
    ready.wait()
    base = f"http://127.0.0.1:{address[0]}"
    out = Path(tempfile.mkdtemp(prefix="flowdsl-crawl-")) / "index.jsonl"

    start = time.perf_counter()
    report = (page_ids(PAGES) >> Fetch(base) >> parse >> Index(str(out))).run()
    seconds = time.perf_counter() - start

    records = [json.loads(line) for line in out.read_text().splitlines()]
    print(f"crawled {len(records)} pages in {seconds:.2f} s (one at a time: {PAGES * 0.05:.0f} s)")
    print("first:", records[0])
    print(f"fetch had at most {report['Fetch'].max_in_flight} requests in flight")


if __name__ == "__main__":
    main()
