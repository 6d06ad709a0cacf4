"""``edgekit ship``: move a verified bundle to a device and have the device check it.

1. Here: verify every SHA-256 (and the signature with ``pubkey``); refuse an unsigned bundle
   when a signature is required.
2. On the device: is the same bundle (same manifest SHA-256) already installed and sound? Then
   nothing is copied.
3. Otherwise one tar stream over ssh into ``edgekit receive`` on the device, which unpacks it
   under a temporary name, verifies hashes, signature, runtime versions, a smoke inference and
   the fidelity gate there, and renames it into place.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError, IntegrityError


def _quiet(_msg: str) -> None:
    return None


def ship(
    bundle: str | Path,
    destination: str,
    *,
    pubkey: str | Path | None = None,
    require_signature: bool = False,
    device_pubkey: str | None = None,
    ssh_options: Sequence[str] = (),
    remote_edgekit: str | None = None,
    progress: Callable[[str], None] = _quiet,
) -> dict[str, Any]:
    """Ship ``bundle`` to ``ssh://[user@]host[:port]:/path``; returns what was done and what the
    device found."""
    from edgekit.bundle import manifest as mf
    from edgekit.bundle import sign
    from edgekit.bundle.verify import manifest_sha256
    from edgekit.devices import remote

    root = Path(bundle)
    dest = remote.parse(destination, need_path=True)
    progress(f"verifying {root} here")
    manifest = mf.read(root, verify=True)
    if pubkey is not None:
        sign.verify(root, pubkey)
    elif require_signature and not sign.is_signed(root):
        raise IntegrityError(
            f"{root} is not signed and a signature is required; sign it with 'edgekit sign {root} --key KEY'"
        )
    sha = manifest_sha256(root)
    lch = remote.launcher(
        remote.Host(dest.host, dest.user, dest.port), ssh_options=ssh_options, remote_edgekit=remote_edgekit
    )
    device_args = ["--require-signature", "--pubkey", device_pubkey or ""] if require_signature else []
    if require_signature and not device_pubkey:
        raise BadInputError(
            "--require-signature needs --device-pubkey PATH: the trusted public key's path on the device"
        )
    assert dest.path is not None
    where = f"{lch.where}:{dest.path}"

    progress(f"checking what {where} holds")
    state = lch.run(["verify", dest.path, "--probe", "--json", *device_args]).json()
    out: dict[str, Any] = {"bundle": str(root), "destination": where, "manifest_sha256": sha}
    if state.get("present") and state.get("ok") and state.get("manifest_sha256") == sha:
        return {**out, "copied": False, "copied_bytes": 0, "device": state, "note": "already installed and verified"}
    replaced = None
    if state.get("present"):
        replaced = "a bundle that failed verification" if not state.get("ok") else "a different bundle"

    progress(f"copying {len(manifest.files)} files to {where} (one tar stream) and verifying them there")
    with tempfile.TemporaryFile() as stream:
        with tarfile.open(fileobj=stream, mode="w|") as tar:
            for entry in [*manifest.files, mf.FileEntry(mf.MANIFEST, sha, 0)]:
                tar.add(root / entry.path, arcname=entry.path, recursive=False)
            if sign.is_signed(root):
                tar.add(root / sign.SIGNATURE, arcname=sign.SIGNATURE, recursive=False)
        size = stream.tell()
        stream.seek(0)
        result = lch.run(["receive", dest.path, "--json", *device_args], stdin=stream).json()
    return {**out, "copied": True, "copied_bytes": size, "replaced": replaced, "device": result}
