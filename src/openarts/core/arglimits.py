"""What the kernel lets a new process take as arguments and environment (execve(2), "Limits on size
of arguments and environment"), checked when a job is created: a job whose worker could never be
started (E2BIG) is refused naming the field, instead of being accepted and never running.

- One argv or environment string ("--name=value", "NAME=value", the command script) is at most
  MAX_ARG_STRLEN bytes, its terminating NUL included.
- All of them together, with one pointer each, are at most a quarter of the stack limit (RLIMIT_STACK),
  at least 128 KiB and at most 6 MiB (three quarters of the kernel's 8 MiB _STK_LIM). The worker also
  inherits the server's environment and gets openarts' own variables (MA_*, VC_*, ...): both count.

Sizes are UTF-8 bytes. Read-only use of process limits; no I/O.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Sequence

MAX_ARG_STRLEN = 32 * 4096  # linux/binfmts.h: PAGE_SIZE * 32, the NUL included
MIN_ARG_MAX = 32 * 4096  # ARG_MAX: the floor the kernel keeps whatever the stack limit
MAX_ARG_MAX = 6 * 1024 * 1024  # _STK_LIM / 4 * 3
POINTER = 8
OWN_VARIABLES = 16 * 1024  # openarts' variables (MA_*, VC_*, MASTER_*, thread counts) and the shim's argv
DEFAULT_DIR = 256  # a channel's default local directory, under the data directory: its length, estimated


def arg_max() -> int:
    """The bytes of argv + environment (strings and pointers) the kernel accepts now."""
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_ARG_MAX
    return max(MIN_ARG_MAX, min(MAX_ARG_MAX, soft // 4))


def inherited_size() -> int:
    """What the server's own environment takes in a worker's (the worker inherits it)."""
    return sum(len(k) + len(v) + 2 + POINTER for k, v in os.environb.items() if not k.startswith(b"OPENARTS_"))


def _size(text: str) -> int:
    return len(text.encode("utf-8", "replace")) + 1  # with its NUL


class ArgLimitError(ValueError):
    """(field, message): a string or the total beyond the kernel's limits."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check(command: str | None, parameters: Sequence[tuple[str, str]], environments: dict[str, str],
          channels: dict[str, Sequence[tuple[str, str | None]]], *, limit: int | None = None,
          inherited: int | None = None) -> None:
    """Raise ArgLimitError naming the field when the worker's argv and environment could not be passed.

    `channels` maps "algorithm.inputs" / "algorithm.outputs" to (name, local_dir or None) pairs: each
    becomes a "--name=dir" argument and an entry of the MA_INPUTS / MA_OUTPUTS variable."""
    strings: dict[str, list[int]] = {}  # field group -> sizes of its strings

    def one(group: str, field: str, text: str) -> None:
        size = _size(text)
        if size > MAX_ARG_STRLEN:
            raise ArgLimitError(field, f"it takes {size} bytes as one argument or variable (its NUL included); "
                                f"the kernel passes at most {MAX_ARG_STRLEN} (MAX_ARG_STRLEN), so the job "
                                "could never start")
        strings.setdefault(group, []).append(size)

    if command:  # as core/layout.argv writes it: the arguments follow as "$@"
        has_args = bool(parameters) or any(channels.values())
        one("algorithm.command", "algorithm.command",
            command.rstrip().rstrip(";").rstrip() + ' "$@"' if has_args else command)
    for i, (name, value) in enumerate(parameters):
        one("algorithm.parameters", f"algorithm.parameters[{i}].value", f"--{name}={value}")
    for key, value in environments.items():
        one("algorithm.environments", f"algorithm.environments.{key}", f"{key}={value}")
    for group, pairs in channels.items():
        dirs = [(name, local or "/" * DEFAULT_DIR) for name, local in pairs]
        for i, (name, local) in enumerate(dirs):
            one(group, f"{group}[{i}].local_dir", f"--{name}={local}")
        if dirs:  # MA_INPUTS / MA_OUTPUTS, as json.dumps writes them
            variable = "MA_" + group.rsplit(".", 1)[1].upper()
            one(group, group, f"{variable}=" + json.dumps([{"name": n, "local_dir": d} for n, d in dirs]))
    limit = arg_max() if limit is None else limit
    base = (inherited_size() if inherited is None else inherited) + OWN_VARIABLES
    total = base + sum(size + POINTER for sizes in strings.values() for size in sizes)
    if total > limit:
        group = max(strings, key=lambda g: sum(strings[g]), default="algorithm.environments")
        raise ArgLimitError(group, f"the job's arguments and environment take {total} bytes with the server's "
                            f"own environment ({base} bytes), beyond the {limit} bytes the kernel passes to a "
                            f"process (a quarter of the stack limit, ARG_MAX); {group} takes "
                            f"{sum(strings.get(group, []))} of them")
