"""W7: IO-bound: 2,000 HTTP requests to a local server that answers each after 20 ms,
then a small CPU parse of each body.

The server (aiohttp's web server) runs in a process of its own, started by each
case before its clock starts. 64 requests in flight at once: the ideal is
2,000 / 64 * 20 ms = 0.63 s. flowdsl runs `fetch` with `concurrency=64` (an
`async def` with one aiohttp session per worker, or a plain function with
`urllib` on threads), then `parse` with `workers=2`. The hand-written baselines
are `asyncio.gather` under `Semaphore(64)` with aiohttp, and
`ThreadPoolExecutor(64).map` with `urllib`, each parsing in the same process;
pypeln runs a `task` stage with `workers=64` then a `process` stage, mpire a
`WorkerPool(64, start_method="threading")`.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from _common import Case, flowdsl_executor

DELAY = 0.02
IN_FLIGHT = 64


# -- the server --------------------------------------------------------------------------
def _serve(port_out, ready) -> None:
    from aiohttp import web

    async def answer(request):
        await asyncio.sleep(DELAY)
        return web.Response(text=request.match_info["x"] * 20)

    async def main():
        app = web.Application()
        app.router.add_get("/item/{x}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_out.value = site._server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class Server:
    """The answering server in a process of its own."""

    def __enter__(self) -> str:
        ctx = multiprocessing.get_context("fork")
        port, ready = ctx.Value("i", 0), ctx.Event()
        self.proc = ctx.Process(target=_serve, args=(port, ready), daemon=True)
        self.proc.start()
        if not ready.wait(20):
            raise RuntimeError("the benchmark's HTTP server did not start")
        return f"http://127.0.0.1:{port.value}"

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.join()


def parse(body: str) -> int:
    """A little CPU per item: hash the body a few times."""
    digest = body.encode()
    for _ in range(20):
        digest = hashlib.sha256(digest).digest()
    return digest[0]


def _fetch_blocking(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _urls(base: str, n: int) -> list[str]:
    return [f"{base}/item/{i % 10}" for i in range(n)]


def _result(count: int, n: int, seconds: float) -> dict[str, float]:
    if count != n:
        raise AssertionError(f"{count} results of {n}")
    return {"requests_per_s": n / seconds, "seconds": seconds}


# -- one function per library ---------------------------------------------------------------
def gather(n: int) -> dict[str, float]:
    import aiohttp

    async def main(base: str) -> int:
        sem = asyncio.Semaphore(IN_FLIGHT)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

            async def one(url: str) -> int:
                async with sem, s.get(url) as r:
                    return parse(await r.text())

            return len(await asyncio.gather(*(one(u) for u in _urls(base, n))))

    with Server() as base:
        t = time.perf_counter()
        count = asyncio.run(main(base))
        return _result(count, n, time.perf_counter() - t)


def threads(n: int) -> dict[str, float]:
    with Server() as base:
        t = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            count = sum(1 for body in pool.map(_fetch_blocking, _urls(base, n)) if parse(body) >= 0)
        return _result(count, n, time.perf_counter() - t)


class _Fetch:
    """flowdsl's async stage: one aiohttp session per worker."""

    async def local_init(self):
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def run(self, url):
        async with self.session.get(url) as r:
            return await r.text()

    async def local_term(self):
        await self.session.close()


def _flowdsl(n: int, fetch) -> dict[str, float]:
    from flowdsl import source, transform

    with Server() as base:
        t = time.perf_counter()
        flow = source(_urls)(base, n) >> fetch >> transform(parse).options(workers=2, ordered=False)
        count = sum(1 for _ in flow.iterate(executor=flowdsl_executor()))
        return _result(count, n, time.perf_counter() - t)


def flowdsl_async(n: int) -> dict[str, float]:
    import aiohttp  # noqa: F401  (imported before the clock, as by the others)

    from flowdsl import Transform

    return _flowdsl(n, Transform(_Fetch(), concurrency=IN_FLIGHT))


def flowdsl_threads(n: int) -> dict[str, float]:
    from flowdsl import transform

    return _flowdsl(n, transform(_fetch_blocking).options(concurrency=IN_FLIGHT))


def pypeln(n: int) -> dict[str, float]:
    import aiohttp
    import pypeln as pl

    sessions: list = []

    async def fetch(url):
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        async with sessions[0].get(url) as r:
            return await r.text()

    with Server() as base:
        t = time.perf_counter()
        stage = pl.task.map(fetch, _urls(base, n), workers=IN_FLIGHT)
        stage = pl.process.map(parse, stage, workers=2)
        count = sum(1 for _ in stage)
        return _result(count, n, time.perf_counter() - t)


def mpire(n: int) -> dict[str, float]:
    from mpire import WorkerPool

    with Server() as base:
        t = time.perf_counter()
        with WorkerPool(n_jobs=IN_FLIGHT, start_method="threading") as pool:
            count = sum(
                1 for body in pool.imap(_fetch_blocking, _urls(base, n)) if parse(body) >= 0
            )
        return _result(count, n, time.perf_counter() - t)


def cases(quick: bool) -> list[Case]:
    kwargs = {"n": 300 if quick else 2000}
    return [
        Case(label, lib, fn, kwargs, timeout=60)
        for label, lib, fn in [
            ("asyncio.gather", "raw", "gather"),
            ("ThreadPoolExecutor", "raw", "threads"),
            ("flowdsl async", "flowdsl", "flowdsl_async"),
            ("flowdsl threads", "flowdsl", "flowdsl_threads"),
            ("pypeln task", "pypeln", "pypeln"),
            ("mpire threading", "mpire", "mpire"),
        ]
    ]
