"""Ed25519 signatures for pack manifests (PyNaCl, imported only when signing or verifying)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from ._exceptions import InvalidKernelError
from ._lazy import require


def _nacl():  # type: ignore[no-untyped-def]
    return require("nacl.signing", feature="Signing and verifying packs")


def keygen(path: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``.

    Returns:
        ``(private_path, public_path, public_hex)``.
    """
    private, public = Path(path), Path(f"{path}.pub")
    for target in (private, public):
        if target.exists() and not overwrite:
            raise InvalidKernelError(f"{target} exists; pass --force to replace it.")
    key = _nacl().SigningKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.encode().hex() + "\n")
    public_hex = key.verify_key.encode().hex()
    public.write_text(public_hex + "\n")
    return private, public, public_hex


def read_key(value: str | os.PathLike[str], *, what: str) -> bytes:
    """A 32-byte key from a file holding its hex form, or from the hex string itself."""
    text = str(value)
    path = Path(text)
    if path.is_file():
        text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InvalidKernelError(f"{what} must be 64 hex digits or a file holding them. Received: {value!s:.80}.")
    return key


def signer(private_key: bytes) -> tuple[str, Callable[[bytes], str]]:
    """``(public_hex, sign)`` where ``sign(message)`` returns the hex signature."""
    key = _nacl().SigningKey(private_key)
    return key.verify_key.encode().hex(), lambda message: key.sign(message).signature.hex()


def verify(public_hex: str, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is ``public_hex``'s signature of ``message``."""
    nacl = _nacl()
    from nacl.exceptions import BadSignatureError

    try:
        nacl.VerifyKey(bytes.fromhex(public_hex)).verify(message, bytes.fromhex(signature_hex))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
