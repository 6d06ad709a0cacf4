"""Signed bundles: the OpenSSF ``model-signing`` library, key-based and offline.

The signature covers ``manifest.json`` (which holds the SHA-256 of every bundle file), so a
verified signature plus verified hashes vouch for every byte. It is written beside the manifest
as ``manifest.sig`` (a Sigstore bundle, DSSE envelope). Keys are elliptic-curve PEM files
(P-256/384/521), e.g. ``openssl ecparam -name prime256v1 -genkey -noout -out key.pem`` and
``openssl ec -in key.pem -pubout -out key.pub``.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import BadInputError, IntegrityError, require

SIGNATURE = "manifest.sig"


def _model_signing() -> object:
    require("model_signing", package="model-signing", extra="sign")
    require("OpenSSL", package="pyopenssl", extra="sign")  # model-signing imports it without declaring it
    import model_signing

    return model_signing


def is_signed(root: str | Path) -> bool:
    return (Path(root) / SIGNATURE).is_file()


def sign(root: str | Path, key: str | Path) -> Path:
    """Verify the bundle's hashes, then sign its manifest with the private ``key``."""
    from edgekit.bundle import manifest as mf
    from edgekit.io.atomic import atomic_write_bytes

    root = Path(root)
    mf.read(root, verify=True)
    key = Path(key)
    if not key.is_file():
        raise BadInputError(f"signing key {key} does not exist; make one with 'openssl ecparam -genkey'")
    ms = _model_signing()
    tmp = root / f".{SIGNATURE}.tmp"
    try:
        config = ms.signing.Config().use_elliptic_key_signer(private_key=key)  # type: ignore[attr-defined]
        config.sign(root / mf.MANIFEST, tmp)
    except (ValueError, TypeError) as exc:
        tmp.unlink(missing_ok=True)
        raise BadInputError(
            f"cannot sign with {key.name}: {_short(exc)}; it must be an EC private key in PEM"
        ) from None
    atomic_write_bytes(root / SIGNATURE, tmp.read_bytes())
    tmp.unlink()
    return root / SIGNATURE


def verify(root: str | Path, pubkey: str | Path) -> None:
    """Raise :class:`IntegrityError` unless ``manifest.sig`` is a valid signature of the
    manifest by the holder of ``pubkey``'s private key."""
    from edgekit.bundle import manifest as mf

    root = Path(root)
    if not is_signed(root):
        raise IntegrityError(f"{root} is not signed; sign it with 'edgekit sign {root} --key KEY'")
    pubkey = Path(pubkey)
    if not pubkey.is_file():
        raise BadInputError(f"public key {pubkey} does not exist; give the signer's public key with --pubkey")
    ms = _model_signing()
    try:
        config = ms.verifying.Config().use_elliptic_key_verifier(public_key=pubkey)  # type: ignore[attr-defined]
        config.verify(root / mf.MANIFEST, root / SIGNATURE)
    except Exception as exc:  # model-signing raises ValueError, JSON and protobuf errors alike
        raise IntegrityError(
            f"the signature of {root} does not verify with {pubkey.name} ({_short(exc)}); "
            "the bundle was altered or signed by another key"
        ) from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
