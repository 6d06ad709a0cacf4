"""How edgekit reaches a device: the only module that knows.

A device is an SSH host, ``ssh://[user@]host[:port]`` (a ship destination adds ``:/path``),
reached through the system OpenSSH client, so ``~/.ssh/config``, keys, agents and jump hosts
work as they do for ``ssh`` itself. Every call runs with ``BatchMode=yes`` (never a password
prompt), a connect timeout, keep-alives and a command timeout.

Local and remote runs go through one seam, a :class:`Launcher`: it runs an ``edgekit`` command
here or on the device and brings back its exit code, output and JSON.

Extra ``ssh`` options (``-i KEY``, ``-o UserKnownHostsFile=…``) come from ``ssh_options`` or the
``EDGEKIT_SSH_OPTIONS`` environment variable; the ``edgekit`` to run on the device from
``remote_edgekit`` or ``EDGEKIT_REMOTE`` (default: ``edgekit`` on the device's PATH).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from edgekit.errors import BadInputError, EdgekitError

CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 1800.0
INSTALL_HINT = "python3 -m pip install edgekit"
_URL = re.compile(
    r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[^\]]+\]|[^:/@\s]+)(?::(?P<port>\d+))?(?::(?P<path>/.*))?$"
)


@dataclass(frozen=True)
class Host:
    """An SSH destination parsed from ``ssh://[user@]host[:port][:/path]``."""

    host: str
    user: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def url(self) -> str:
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{port}"


def parse(url: str, *, need_path: bool = False) -> Host:
    """Parse an ``ssh://`` URL; ``need_path`` for a ship destination (``ssh://host:/opt/models``)."""
    m = _URL.match(url.strip())
    example = "ssh://user@host:2222:/opt/models/digits" if need_path else "ssh://user@host:2222"
    if not m:
        raise BadInputError(f"{url!r} is not a device address; write it as {example}")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise BadInputError(f"port {port} in {url!r} is out of range (1-65535)")
    if need_path and not m["path"]:
        raise BadInputError(f"{url!r} names no directory on the device; write it as {example}")
    if not need_path and m["path"]:
        raise BadInputError(f"{url!r} has a path; --host takes only the device, e.g. {example}")
    return Host(host=m["host"].strip("[]"), user=m["user"], port=port, path=m["path"])


def env_ssh_options() -> list[str]:
    return shlex.split(os.environ.get("EDGEKIT_SSH_OPTIONS", ""))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except ValueError:
            raise EdgekitError(f"the device answered with something that is not JSON: {self.stdout[:200]!r}") from None


@dataclass
class Launcher:
    """Runs ``edgekit`` commands here (``host`` None) or on an SSH device."""

    host: Host | None = None
    ssh_options: list[str] = field(default_factory=env_ssh_options)
    remote_edgekit: str = field(default_factory=lambda: os.environ.get("EDGEKIT_REMOTE", "edgekit"))
    timeout_s: float = COMMAND_TIMEOUT_S

    @property
    def where(self) -> str:
        return self.host.url() if self.host else "this machine"

    def ssh_argv(self, command: str) -> list[str]:
        """The ``ssh`` command line that runs the shell ``command`` on the device."""
        assert self.host is not None
        argv = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip
        if self.host.port:
            argv += ["-p", str(self.host.port)]
        return [*argv, *self.ssh_options, "--", self.host.target, command]

    def argv(self, args: Sequence[str]) -> list[str]:
        if self.host is None:
            return [sys.executable, "-m", "edgekit", *args]
        return self.ssh_argv(shlex.join([self.remote_edgekit, *args]))

    def run(self, args: Sequence[str], *, stdin: IO[bytes] | None = None, check: bool = True) -> Result:
        """Run ``edgekit ARGS`` and return its result. With ``check``, a failure becomes a one-line
        :class:`BadInputError` naming what went wrong on which host."""
        try:
            proc = subprocess.run(
                self.argv(args),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise BadInputError("the OpenSSH client 'ssh' is not installed here; install openssh-client") from None
        except subprocess.TimeoutExpired:
            raise BadInputError(
                f"edgekit {args[0]} on {self.where} did not finish within {self.timeout_s:.0f} s"
            ) from None
        res = Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and res.code != 0:
            raise self.failure(res)
        return res

    def failure(self, res: Result) -> EdgekitError:
        """The one-line error for a failed run: connection, authentication, missing edgekit, or
        the error edgekit itself printed on the device (with its exit code)."""
        err = res.stderr.strip()
        if self.host is not None and res.code == 255:
            return BadInputError(ssh_problem(self.host, err))
        if self.host is not None and res.code == 127:
            return BadInputError(
                f"edgekit is not installed on {self.host.url()} ({self.remote_edgekit!r} not found); install it "
                f"there with: ssh {self.host.target} '{INSTALL_HINT}' (or pass --remote-edgekit PATH)"
            )
        last = _edgekit_error(err)
        exc: EdgekitError
        exc = BadInputError(last) if res.code == 2 else EdgekitError(last)
        exc.exit_code = res.code if res.code in (1, 2, 3) else 1
        return exc


def _edgekit_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("edgekit: error: "):
            return ln.removeprefix("edgekit: error: ")
    return lines[-1] if lines else "the command failed without a message"


def ssh_problem(host: Host, stderr: str) -> str:
    """A one-line diagnosis of an ``ssh`` failure (exit code 255)."""
    low = stderr.lower()
    where = host.url()
    if "permission denied" in low or "too many authentication failures" in low:
        return (
            f"{where} refused the SSH key (permission denied); add your public key to the device's "
            "~/.ssh/authorized_keys or pick a key with --ssh-option=-i KEY"
        )
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return f"{where}'s host key is unknown or changed; check it and add it to ~/.ssh/known_hosts"
    if any(s in low for s in ("connection refused", "timed out", "no route to host", "could not resolve", "closed")):
        return f"{where} is unreachable ({_first_line(stderr)}); check the address, port and that sshd runs there"
    return f"ssh to {where} failed ({_first_line(stderr) or 'exit code 255'})"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    return lines[0] if lines else ""


def launcher(
    host: str | Host | None, *, ssh_options: Sequence[str] = (), remote_edgekit: str | None = None
) -> Launcher:
    """The launcher for ``--host`` (``None``: this machine)."""
    lch = Launcher(host=parse(host) if isinstance(host, str) else host)
    lch.ssh_options = [*lch.ssh_options, *ssh_options]
    if remote_edgekit:
        lch.remote_edgekit = remote_edgekit
    return lch
