"""The memory poison points need, checked against what this process may really allocate."""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from subpop_runner.errors import ConfigError


def check_memory(budgets: Sequence[int], row_bytes: int, memory_mb: float) -> None:
    """Raise `ConfigError` before any poison point exists unless they fit: one victim's poison
    rows within the memory budget of a chunk of victims (``training.memory_mb``: a chunk holds
    at least one victim), and every subpopulation's together, as the pipeline holds them,
    within what this process may still allocate (`available_memory`). ``attack.alpha=1e9`` is
    refused here instead of growing until a MemoryError or the kernel kills the job."""
    if not budgets:
        return
    largest, total = max(budgets) * row_bytes, sum(budgets) * row_bytes
    if largest > memory_mb * 2**20:
        raise ConfigError(
            f"attack.alpha: one subpopulation's {max(budgets):,} poison points need "
            f"{_size(largest)} ({row_bytes:,} B each), beyond the memory budget of one victim "
            f"(training.memory_mb={memory_mb:g} MiB); lower attack.alpha, or raise "
            "training.memory_mb"
        )
    available = available_memory()
    if total > available.left:
        raise ConfigError(
            f"attack.alpha: the {len(budgets)} subpopulations' {sum(budgets):,} poison points "
            f"need {_size(total)} together, more than the {_size(available.left)} "
            f"{available.limit}; lower attack.alpha, or attack fewer subpopulations "
            "(selector.take)"
        )


PROC, CGROUP = Path("/proc"), Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a huge page-aligned number (2^63 - 4096 here), v2 as "max".
UNLIMITED = 2**60


@dataclass(frozen=True)
class Memory:
    """Bytes this process may still allocate, and the words naming the limit that says so."""

    left: int
    limit: str


def available_memory(proc: Path = PROC, cgroup: Path = CGROUP) -> Memory:
    """The tightest of the limits on this process: the machine's free memory, its
    address-space limit (``ulimit -v``) and the cgroup memory limits it runs under (a
    container's, a batch job's). Only the machine's is always there."""
    found = [machine_memory(proc)]
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft_limit != resource.RLIM_INFINITY:
        found.append(address_space_left(soft_limit, proc))
    found += cgroup_memory(proc, cgroup)
    return min(found, key=lambda memory: memory.left)


def machine_memory(proc: Path = PROC) -> Memory:
    """What the kernel can give without swapping (Linux's MemAvailable; else all RAM)."""
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return Memory(int(line.split()[1]) * 1024, "of memory available here")
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Memory(ram, "of memory this machine has")


def address_space_left(limit: int, proc: Path = PROC) -> Memory:
    """What an address-space limit of ``limit`` bytes (RLIMIT_AS) leaves: the limit less what
    the process has mapped already (VmSize; torch and its threads map gigabytes they never
    touch, and all of it counts)."""
    mapped = 0
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    except OSError:
        pass
    words = "this process may still allocate under its address-space limit (ulimit -v)"
    return Memory(max(limit - mapped, 0), words)


def cgroup_memory(proc: Path = PROC, cgroup: Path = CGROUP) -> list[Memory]:
    """What each cgroup memory limit on this process leaves (limit less usage), from the
    cgroups ``/proc/self/cgroup`` names: v2 (``0::/path``: ``memory.max``, "max" for none,
    and ``memory.current``) and v1's memory controller (``N:memory:/path``:
    ``memory.limit_in_bytes`` and ``memory.usage_in_bytes``). A parent's limit holds for its
    children, so every folder from the cgroup's up to the mount is read; missing files (no
    memory controller there, a container that sees its own cgroup as the mount) are
    skipped."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:
            found += _limits_up_to(cgroup, path, "memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            found += _limits_up_to(
                cgroup / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes"
            )
    return found


def _limits_up_to(mount: Path, path: str, limit_file: str, usage_file: str) -> list[Memory]:
    parts = PurePosixPath(path).parts[1:]
    if ".." in parts:  # a cgroup outside this namespace's view: only the mount can be read
        parts = ()
    found = []
    for depth in range(len(parts), -1, -1):
        folder = mount.joinpath(*parts[:depth])
        limit, usage = _number(folder / limit_file), _number(folder / usage_file)
        if limit is not None and usage is not None and limit < UNLIMITED:
            words = (
                "this process may still allocate under its cgroup memory limit "
                f"({folder / limit_file})"
            )
            found.append(Memory(max(limit - usage, 0), words))
    return found


def _number(path: Path) -> int | None:
    """The integer a cgroup file holds; None when it is missing or says "max"."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"
