"""Where ``gen run``'s results go and how several processes share the files: the output :class:`Sink`
(a folder, one file, or stdout, in input order; gathered over processes), the ``accelerate launch`` /
``torchrun`` process state, and ``--num-processes`` relaunching the command as one torch.distributed job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


class Sink:
    """Where results go - files in an output folder, one output file, or stdout - in input order.

    Folder names are fixed up front, in input order (``a/x.m4a`` and ``b/x.m4a`` give ``x.txt`` and
    ``x-2.txt``), so processes sharing the files never pick the same name. Text for stdout or one output
    file is held when ``gather`` (several processes) or a single file is written, and put in input order."""

    def __init__(
        self, out: Optional[Path], out_dir: Optional[Path], files: list[Path], ext_of, *, gather: bool = False
    ) -> None:
        from collections import defaultdict, deque

        self.out, self.out_dir, self.gather = out, out_dir, gather
        self.index: dict[Path, deque] = defaultdict(deque)  # a file given twice has two places
        for i, f in enumerate(files):
            self.index[f].append(i)
        used: set[str] = set()
        self.names = [_unique(out_dir, f, ext_of(f), used) for f in files] if out_dir is not None else []
        self.held: list[tuple[int, str]] = []

    def target(self, src: Path) -> Path:
        """The output file of ``src`` (audio outputs)."""
        i = self.index[src].popleft()
        return self.names[i] if self.out_dir is not None else self.out

    def emit(self, text: str, src: Path) -> None:
        from generalist_cli.cli.common import write_atomic
        from generalist_cli.console import out as stdout

        i = self.index[src].popleft()
        if self.out_dir is not None:
            write_atomic(self.names[i], text)
        elif self.out is not None or self.gather:
            self.held.append((i, text))
        else:
            stdout.print(text, end="", markup=False, highlight=False)

    def finish(self, failed: int, state) -> int:
        """Write what was held (the main process, after gathering every process's part); returns the number
        of failed files over all processes."""
        from generalist_cli.cli.common import write_atomic
        from generalist_cli.console import out as stdout

        held = self.held
        if state is not None:
            from accelerate.utils import gather_object

            held = gather_object(held)
            failed = sum(gather_object([failed]))
            if not state.is_main_process:
                return failed
        text = "".join(t for _, t in sorted(held, key=lambda x: x[0]))
        if self.out_dir is None and self.out is not None:
            if text:
                write_atomic(self.out, text)
        elif text:
            stdout.print(text, end="", markup=False, highlight=False)
        return failed


def process_state():
    """accelerate's process state when this runs as one of several processes (``accelerate launch``,
    ``torchrun`` or ``--num-processes``): gloo on CPUs, NCCL on GPUs, one GPU per process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))


def relaunch(n: int) -> int:
    """``gen run --num-processes N ...``: start N copies of this command as one torch.distributed job (the
    environment ``torchrun`` and ``accelerate launch`` set: rank, world size, a local rendezvous), one per GPU
    when there are N of them, else CPU processes sharing the cores; returns the first non-zero exit code."""
    import socket
    import subprocess
    import sys

    import torch

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--num-processes", "-n"):
            skip = True
        elif not a.startswith("--num-processes="):
            args.append(a)
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cpu = torch.cuda.device_count() < n
    procs = []
    for rank in range(n):
        env = {
            **os.environ,
            "WORLD_SIZE": str(n),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        if cpu:  # CPU processes share the cores
            env["ACCELERATE_USE_CPU"] = "true"
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        procs.append(subprocess.Popen([sys.executable, "-m", "generalist_cli", *args], env=env))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def out_dir(out: Optional[Path], n_files: int) -> Optional[Path]:
    """--out is a folder when it exists as one, ends with '/', or many files are given."""
    from generalist_cli.errors import GenError

    if out is None:
        return None
    if out.is_dir() or str(out).endswith("/") or n_files > 1:
        if out.exists() and not out.is_dir():
            raise GenError(f"{out}: exists and is not a folder", hint="give a folder for several inputs")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenError(f"{out}: cannot create the output folder ({exc.strerror})") from exc
        return out
    if not out.parent.exists():
        raise GenError(f"{out}: its folder {out.parent} does not exist")
    return None


def _unique(folder: Path, src: Path, ext: str, used: set[str]) -> Path:
    name, n = f"{src.stem}.{ext}", 1
    while name in used:
        n += 1
        name = f"{src.stem}-{n}.{ext}"
    used.add(name)
    return folder / name
