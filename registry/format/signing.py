"""Ed25519 signatures for pack manifests (PyNaCl, imported only when signing or verifying)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .._exceptions import InvalidKernelError
from .._lazy import require


def _nacl():  # type: ignore[no-untyped-def]
    return require("nacl.signing", feature="Signing and verifying packs")


def keygen(path: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``.

    The private key file is written afresh with mode 0600 and renamed into place, so it is
    0600 even when ``overwrite`` replaces a world-readable file; a missing parent directory
    is created with mode 0700.

    Returns:
        ``(private_path, public_path, public_hex)``.
    """
    private, public = Path(path), Path(f"{path}.pub")
    for target in (private, public):
        if target.exists() and not overwrite:
            raise InvalidKernelError(f"{target} exists; pass --force to replace it.")
        if target.is_dir():
            raise InvalidKernelError(f"{target} is a directory; name a file for the key.")
    try:
        private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidKernelError(f"Cannot create {private.parent} for the key: {exc.strerror}.") from None
    key = _nacl().SigningKey.generate()
    public_hex = key.verify_key.encode().hex()
    _write_new(private, key.encode().hex() + "\n", stat.S_IRUSR | stat.S_IWUSR)
    _write_new(public, public_hex + "\n", 0o644)
    return private, public, public_hex


def _write_new(target: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file created with ``mode`` and rename it over ``target``:
    an existing file's looser mode is never inherited."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it: a public key is meant to be readable
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_key(value: str | os.PathLike[str], *, what: str, secret: bool | None = None) -> bytes:
    """A 32-byte key from a file holding its hex form, or (public keys only) from the hex itself.

    Args:
        value: a key file, or for a public key its 64 hex digits.
        what: the option or argument it came from, for messages (``--sign`` or ``sign``
            means a private key).
        secret: a private key to sign with (default: ``what`` is ``--sign`` or ``sign``). It must be a file
            readable by its owner only and not a ``.pub`` file: signing with a public key
            makes a "signature" anyone holding that public key can forge.

    Raises:
        InvalidKernelError: naming what was wrong and what to pass instead.
    """
    secret = what.lstrip("-") == "sign" if secret is None else secret
    text = str(value)
    path = Path(text)
    if path.is_file():
        if secret and path.name.endswith(".pub"):
            raise InvalidKernelError(
                f"{what} {path} is a public key: anyone who has it could make the same signature. "
                f"Pass the private key (kreg keygen -o {path.with_suffix('')} made both)."
            )
        if secret and path.stat().st_mode & 0o077:
            raise InvalidKernelError(
                f"{what} {path} is readable by other users (mode {stat.S_IMODE(path.stat().st_mode):04o}); a private "
                f"key must be readable by its owner only: chmod 600 {path}. A public key cannot sign."
            )
        if not secret and Path(f"{path}.pub").is_file():
            raise InvalidKernelError(
                f"{what} {path} is a private key ({path}.pub sits next to it). Pass {path}.pub, and keep {path} secret."
            )
        text = path.read_text().strip()
    elif secret:
        raise InvalidKernelError(
            f"{what} takes a private key file (kreg keygen -o FILE), not the key itself, which would show in the "
            f"shell history and the process list. Received: {path} (no such file)."
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        hint = f" ({text} does not exist)" if not path.exists() and ("/" in text or text.endswith(".pub")) else ""
        raise InvalidKernelError(
            f"{what} must be 64 hex digits or a file holding them{hint}. Received: {value!s:.80}."
        )
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
