"""CLI verbs for devices: ``ship``, ``sign``, ``verify`` and the device end of a ship, ``receive``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def ssh_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--ssh-option`` and ``--remote-edgekit``, shared by every verb that reaches a device."""
    fn = click.option(
        "--remote-edgekit",
        default=None,
        metavar="PATH",
        help="The edgekit command on the device (default: $EDGEKIT_REMOTE or 'edgekit' on its PATH).",
    )(fn)
    return click.option(
        "--ssh-option",
        "ssh_opts",
        multiple=True,
        metavar="ARG",
        help="Extra ssh argument(s), e.g. --ssh-option='-i key' (also $EDGEKIT_SSH_OPTIONS).",
    )(fn)


def split_ssh_options(opts: tuple[str, ...]) -> list[str]:
    import shlex

    return [part for o in opts for part in shlex.split(o)]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option("--pubkey", type=click.Path(path_type=Path), default=None, help="Verify the signature here first.")
@click.option("--require-signature", is_flag=True, help="The device refuses the bundle unless signed by its key.")
@click.option("--device-pubkey", default=None, metavar="PATH", help="Trusted public key's path on the device.")
@ssh_options
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def ship(
    bundle: Path,
    destination: str,
    pubkey: Path | None,
    require_signature: bool,
    device_pubkey: str | None,
    ssh_opts: tuple[str, ...],
    remote_edgekit: str | None,
    as_json: bool,
) -> None:
    """Copy BUNDLE to DESTINATION (ssh://[user@]host[:port]:/path) and verify it on the device."""
    from edgekit import api
    from edgekit.cli import _progress

    with _progress(not as_json) as step:
        result = api.ship(
            bundle,
            destination,
            pubkey=pubkey,
            require_signature=require_signature,
            device_pubkey=device_pubkey,
            ssh_options=split_ssh_options(ssh_opts),
            remote_edgekit=remote_edgekit,
            progress=step,
        )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    dev = result["device"]
    if not result["copied"]:
        click.echo(f"{result['destination']}: already installed and verified there; nothing copied")
    else:
        extra = f" (replaced {result['replaced']})" if result.get("replaced") else ""
        click.echo(f"copied {result['copied_bytes']} bytes to {result['destination']}{extra}")
    host = dev["device"]["hostname"]
    click.echo(f"verified on {host}: {dev['files_verified']} files match their SHA-256, signature {dev['signature']}")
    smoke = dev["smoke"]
    if smoke.get("compared"):
        click.echo(f"smoke inference matches fp32 recorded at compress time (max |Δ| {smoke['max_abs_err']:.2e})")
    for pkg, v in dev["toolchain"]["differs"].items():
        click.echo(f"note: {pkg} {v['device']} on the device, bundle built with {v['bundle']}")
    for v in dev.get("variants", []):
        verdict = "deployable here" if v["deployable_here"] else f"NOT deployable here: {v['reason']}"
        click.echo(f"  {v['name']:<22} {verdict}")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="EC private key (PEM).")
def sign(bundle: Path, key: Path) -> None:
    """Sign BUNDLE's manifest (which hashes every file) with KEY (OpenSSF model-signing)."""
    from edgekit import api

    path = api.sign(bundle, key)
    click.echo(f"signed: {path}")


def _verify_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")(fn)
    fn = click.option("--no-gate", is_flag=True, help="Skip the per-variant fidelity gate.")(fn)
    fn = click.option("--require-signature", is_flag=True, help="Refuse an unsigned bundle.")(fn)
    return click.option("--pubkey", type=click.Path(path_type=Path), default=None, help="Signer's public key.")(fn)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@_verify_options
@click.option("--probe", is_flag=True, hidden=True, help="Report failures as JSON (exit 0), for ship.")
def verify(
    bundle: Path, pubkey: Path | None, require_signature: bool, no_gate: bool, as_json: bool, probe: bool
) -> None:
    """Check BUNDLE here: hashes, signature, runtime versions, smoke inference, fidelity gate."""
    from edgekit.bundle import verify as v

    check = v.probe if probe else v.verify
    result = check(bundle, pubkey=pubkey, require_signature=require_signature, gate=not no_gate)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{bundle}: {result['files_verified']} files match their SHA-256; signature {result['signature']}")
    for row in result.get("variants", []):
        verdict = "deployable here" if row["deployable_here"] else f"NOT deployable here: {row['reason']}"
        click.echo(f"  {row['name']:<22} {verdict}")


@click.command(hidden=True)
@click.argument("destination", type=click.Path(path_type=Path))
@_verify_options
def receive(destination: Path, pubkey: Path | None, require_signature: bool, no_gate: bool, as_json: bool) -> None:
    """Device end of 'edgekit ship': read a bundle tar on stdin, verify it, install it at DESTINATION."""
    from edgekit.bundle.verify import receive as _receive

    result = _receive(
        destination, sys.stdin.buffer, pubkey=pubkey, require_signature=require_signature, gate=not no_gate
    )
    click.echo(json.dumps(result, indent=2) if as_json else f"installed and verified: {destination}")


@click.command("measure-stage", hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (the only output).")
def measure_stage(as_json: bool) -> None:
    """Device end of 'edgekit search --host': read a stage tar on stdin (candidates, held-out
    samples, options), measure it with the harness, print the rows; nothing is kept."""
    from edgekit.search.remote import measure_stage as _measure

    result = _measure(sys.stdin.buffer)
    click.echo(json.dumps(result, default=str) if as_json else f"measured {len(result['rows'])} candidates")
