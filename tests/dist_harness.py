"""A session-scoped pool of ``world_size`` processes joined in a gloo process group.

Spawning processes and importing torch costs seconds, so the pool starts once per test session
and runs many cases. A case is a module-level function in a test file; the workers import that
file by path and call it with the pickled arguments on every rank, as ``fn(rank, world_size,
*args)``, and the pool returns the per-rank results in rank order (or raises with the workers'
tracebacks).
"""

from __future__ import annotations

import importlib.util
import os
import queue
import socket
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch.multiprocessing as mp

TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _test_module(path: str) -> Any:
    """The test file at ``path``, loaded once per worker under its file name (as pytest names
    it), without touching ``sys.path``: the workers inherit the parent's path, on which pytest
    put the test folder (``helpers``, ``contracts``) and the repository root (``benchmarks``)."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the test module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _worker(rank: int, world: int, port: int, tasks: Any, results: Any) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    while True:
        task = tasks.get()
        if task is None:
            break
        path, name, args = task
        try:
            module = _test_module(path)
            out = getattr(module, name)(rank, world, *args)
            results.put((rank, True, out))
        except BaseException:
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class DistPool:
    """``world_size`` worker processes in one gloo group, running test cases on demand."""

    def __init__(self, world_size: int = 2) -> None:
        self.world_size = world_size
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(self.world_size)]
        port = _free_port()
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(r, self.world_size, port, self._tasks[r], self._results),
                daemon=True,
            )
            for r in range(self.world_size)
        ]
        for p in self._procs:
            p.start()

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """Run ``fn(rank, world_size, *args)`` on every rank; return the results by rank."""
        task = (fn.__code__.co_filename, fn.__name__, args)
        for q in self._tasks:
            q.put(task)
        outs: dict[int, Any] = {}
        errors: list[str] = []
        try:
            for _ in range(self.world_size):
                r, ok, value = self._results.get(timeout=TIMEOUT_S)
                if ok:
                    outs[r] = value
                else:
                    errors.append(f"rank {r}:\n{value}")
                    # the other rank may be blocked in a collective: restart the pool
                    break
        except queue.Empty:
            errors.append(f"timed out after {TIMEOUT_S}s waiting for the workers")
        if errors:
            self.close()
            self._start()
            raise RuntimeError("distributed case failed:\n" + "\n".join(errors))
        return [outs[r] for r in range(self.world_size)]

    def close(self) -> None:
        for q in self._tasks:
            q.put(None)
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
