# An asyncio web server that hands its CPU-bound work to worker processes
# through interproc queues.
#
# The event loop must never run the work itself: one request counting
# primes would stall every other connection. So each request becomes a job
# on a shared queue, a pool of worker processes takes jobs with a plain
# blocking get(), and the loop awaits the answers with get_async(), which
# costs no thread and no polling: a worker's put() wakes the loop.
#
# Answers come back on one results queue in whatever order the workers
# finish, so each job carries an id and a single dispatcher coroutine hands
# every answer to the future of the request waiting for it.
#
#   python examples/async_server.py            # serve a few requests from a
#                                              # built-in client, print, exit
#   python examples/async_server.py --serve    # keep serving on port 8000:
#   curl http://127.0.0.1:8000/primes/100000
import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import signal

import interproc

WORKERS = 2
# How long a request waits for its answer: a worker that died must not
# leave its request hanging for ever.
ANSWER_TIMEOUT = 30.0


def count_primes(limit):
    """The CPU-bound work: the number of primes below ``limit``."""
    if limit < 3:
        return 0
    sieve = bytearray([1]) * limit
    sieve[0] = sieve[1] = 0
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, limit, i)))
    return sum(sieve)


@contextlib.contextmanager
def deaf_to_ctrl_c():
    """Start the workers with Ctrl-C ignored from their first instruction.

    Ctrl-C reaches the whole process group, but the server shuts the workers
    down itself, with the None sentinel. A worker that ignored SIGINT in its
    own code could still be interrupted while starting, before that line
    runs. An ignored signal stays ignored across fork and exec, and the
    forkserver hands its own disposition on, so the workers are started
    while this process ignores it. (A blocked signal would not do: spawn
    and the forkserver clear the mask.) A Ctrl-C in these few milliseconds
    is lost; the next one works.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker(jobs, results):
    for job_id, limit in iter(jobs.get, None):
        try:
            results.put((job_id, True, count_primes(limit)))
        except Exception as exc:  # the request gets the error, the worker goes on
            results.put((job_id, False, repr(exc)))


class Server:
    def __init__(self, jobs, results):
        self.jobs = jobs
        self.results = results
        self.ids = itertools.count()
        self.pending = {}  # job id -> the future of the request awaiting it

    async def dispatch(self):
        """Route every answer to the request that asked for it."""
        while True:
            job_id, ok, value = await self.results.get_async()
            future = self.pending.pop(job_id, None)
            # None: that request timed out or its client left meanwhile.
            if future is not None and not future.done():
                future.set_result((ok, value))

    async def compute(self, limit):
        job_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[job_id] = future
        try:
            await self.jobs.put_async((job_id, limit))
            return await asyncio.wait_for(future, ANSWER_TIMEOUT)
        finally:
            self.pending.pop(job_id, None)

    async def handle(self, reader, writer):
        """A minimal HTTP/1.0 exchange: GET /primes/N, one request per connection."""
        try:
            request = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()).strip():
                pass  # headers: not needed here
            status, body = await self.answer(request)
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body) + 1}\r\n\r\n{body}\n".encode()
            )
            await writer.drain()
        except ConnectionError:
            pass  # the client left before its answer was written
        finally:
            writer.close()

    async def answer(self, request):
        parts = request[1].split("/") if len(request) >= 2 and request[0] == "GET" else []
        if len(parts) != 3 or parts[1] != "primes" or not parts[2].isdigit():
            return "404 Not Found", "try GET /primes/N"
        limit = int(parts[2])
        if limit > 10_000_000:
            return "400 Bad Request", "N must be at most 10000000"
        try:
            ok, value = await self.compute(limit)
        except asyncio.TimeoutError:
            return "504 Gateway Timeout", "no worker answered"
        if not ok:
            return "500 Internal Server Error", value
        return "200 OK", f"primes below {limit}: {value}"


async def fetch(port, path):
    """The built-in client: one GET, the response's body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response.split(b"\r\n\r\n", 1)[1].decode().strip()


async def main(serve, port):
    jobs, results = interproc.Queue(), interproc.Queue()
    workers = [multiprocessing.Process(target=worker, args=(jobs, results))
               for _ in range(WORKERS)]
    with deaf_to_ctrl_c():
        for p in workers:
            p.start()
    app = Server(jobs, results)
    dispatcher = asyncio.create_task(app.dispatch())
    server = await asyncio.start_server(app.handle, "127.0.0.1", port)
    try:
        port = server.sockets[0].getsockname()[1]
        if serve:
            print(f"serving on http://127.0.0.1:{port}/primes/N (Ctrl-C stops)", flush=True)
            await server.serve_forever()
        else:
            # Concurrent requests: the loop keeps accepting while the
            # workers count, and each answer finds its own request.
            paths = [f"/primes/{n}" for n in (10, 100, 1000, 10_000, 100_000, 1_000_000)]
            bodies = await asyncio.gather(*(fetch(port, path) for path in paths))
            for path, body in zip(paths, bodies):
                print(f"GET {path} -> {body}")
            print(await fetch(port, "/nowhere"))
    finally:
        # Clean shutdown: no new connections, one sentinel per worker, the
        # workers joined (in a thread: join() blocks), then the dispatcher
        # stopped (a cancelled get_async takes nothing) and the queues
        # closed.
        server.close()
        await server.wait_closed()
        for _ in workers:
            await jobs.put_async(None)
        for p in workers:
            await asyncio.to_thread(p.join)
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        jobs.close()
        results.close()
        print(f"{len(workers)} workers stopped with exit codes {[p.exitcode for p in workers]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="An asyncio web server handing its work to worker processes.")
    parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    parser.add_argument("--port", type=int, default=None,
                        help="port to listen on (default: 8000 with --serve, any free one without)")
    args = parser.parse_args()
    port = args.port if args.port is not None else (8000 if args.serve else 0)
    try:
        asyncio.run(main(args.serve, port))
    except KeyboardInterrupt:
        pass  # main()'s finally has stopped the workers
