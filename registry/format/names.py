"""Kernel names, ``name@version`` refs, natural sorting and "did you mean" hints."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .._exceptions import InvalidNameError
from .limits import LIMITS

#: Longest kernel name accepted, in characters.
MAX_NAME_LENGTH = LIMITS.max_name_length
#: Most ``/``-separated segments in a name (the reader's nesting limit less one).
MAX_NAME_SEGMENTS = LIMITS.max_name_segments
#: Most digits of a version number (``KernelRef`` in the schema allows 12 characters after the name).
MAX_VERSION_DIGITS = 11

# Segments start with a letter or digit, so "." and ".." segments, hidden
# files and leading dashes can never appear; "/" joins namespace segments.
_SEGMENT = r"[a-z0-9][a-z0-9_.-]*"
NAME_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*$"
_NAME_RE = re.compile(NAME_PATTERN)
_NATURAL_RE = re.compile(r"(\d+)")


#: A label: a letter, then lowercase letters, digits, ``_.-``; never a number (``@3`` is a
#: version) and never ``sha256`` (``@sha256:...`` is a content pin).
LABEL_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
_LABEL_RE = re.compile(LABEL_PATTERN)


class Ref(NamedTuple):
    """A parsed kernel reference: a name and, when pinned, a version or a label."""

    name: str
    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.label is not None:
            return f"{self.name}@{self.label}"
        return self.name if self.version is None else f"{self.name}@{self.version}"


def check_label(label: object) -> str:
    """Return ``label`` unchanged if it is a label name (see :data:`LABEL_PATTERN`).

    Example:
        >>> check_label("stable")
        'stable'
    """
    text = label if isinstance(label, str) else repr(label)
    if isinstance(label, str) and _LABEL_RE.match(label) and label != "sha256":
        return label
    if isinstance(label, str) and label.isascii() and label.isdigit():
        why = "is a number (name@3 is version 3)"
    elif isinstance(label, str) and label.startswith("sha256"):
        why = "starts with sha256 (name@sha256:... is a content pin)"
    else:
        why = "is not a letter followed by at most 63 of a-z, 0-9, _ . -"
    raise InvalidNameError(f"A label name is a word such as 'stable', never a number or 'sha256'; "
                           f"{escape(text[:80])} {why}.")


def check_name(name: object) -> str:
    """Return ``name`` unchanged if it follows the kernel-name grammar.

    The grammar: lowercase ``[a-z0-9_.-]`` segments joined by ``/``, each
    starting with a letter or digit, at most 128 characters and 15 segments, no ``..``.

    Raises:
        InvalidNameError: naming the rule that was broken.

    Example:
        >>> check_name("team/edge_x")
        'team/edge_x'
    """
    if not isinstance(name, str):
        raise InvalidNameError(
            f"A kernel name must be a string. Received: name={name!r} "
            f"of type {type(name).__name__}."
        )
    shown = escape(name)
    if not name:
        raise InvalidNameError("A kernel name must not be empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"A kernel name is at most {MAX_NAME_LENGTH} characters. "
            f"Received: {len(name)} characters ({shown[:40]}...)."
        )
    if ".." in name:
        raise InvalidNameError(f"A kernel name must not contain '..'. Received: name={shown}.")
    if name.startswith("/"):
        raise InvalidNameError(
            f"A kernel name must not start with '/'. Received: name={shown}."
        )
    if name.count("/") >= MAX_NAME_SEGMENTS:
        raise InvalidNameError(
            f"A kernel name has at most {MAX_NAME_SEGMENTS} '/'-separated segments. "
            f"Received: {name.count('/') + 1} segments ({shown[:40]}...)."
        )
    if not _NAME_RE.match(name):
        hint = " Use lowercase letters." if name.lower() != name else ""
        raise InvalidNameError(
            "A kernel name is lowercase [a-z0-9_.-] segments joined by '/', each "
            f"starting with a letter or digit.{hint} Received: name={shown}."
        )
    return name


def parse_ref(ref: object) -> Ref:
    """Parse ``"name"``, ``"name@version"`` or ``"name@label"`` into a :class:`Ref`.

    Example:
        >>> parse_ref("sobel_x@2")
        Ref(name='sobel_x', version=2, label=None)
        >>> parse_ref("team/edge@stable").label
        'stable'
    """
    if isinstance(ref, Ref):
        return ref
    if not isinstance(ref, str):
        raise InvalidNameError(
            f"A kernel ref is a string such as 'sobel_x' or 'sobel_x@2'. Received: {ref!r}."
        )
    name, sep, version = ref.partition("@")
    if not sep:
        return Ref(check_name(name))
    if version[:1].isascii() and version[:1].isalpha() and not version.startswith("sha256"):
        return Ref(check_name(name), None, check_label(version))
    # The length check comes first: int() of thousands of digits raises its own ValueError.
    if not version.isascii() or not version.isdigit() or len(version) > MAX_VERSION_DIGITS or int(version) < 1:
        raise InvalidNameError(
            f"The version after '@' is a whole number from 1, at most {MAX_VERSION_DIGITS} digits. "
            f"Received: ref={escape(ref[:80])}{'...' if len(ref) > 80 else ''}."
        )
    return Ref(check_name(name), int(version))


#: Fewest hex digits of the sha256 a content pin may give (48 bits: no two versions of a name meet).
MIN_PIN_DIGITS = 12
PIN_MARK = "sha256:"
_HEX = re.compile(r"[0-9a-f]+")


def parse_pin(ref: object) -> tuple[str, str] | None:
    """``(name, hex prefix)`` of a content pin ``"name@sha256:HEX"``, None for any other ref.

    A pin names a version by its values (the content hash of section 3 of FORMAT.md), so it
    means the same kernel in every registry that holds it, whatever number it has there.

    Raises:
        InvalidNameError: fewer than :data:`MIN_PIN_DIGITS` hex digits, or more than 64, or not hex.

    Example:
        >>> parse_pin("team/edge@sha256:D7EDADADE470")
        ('team/edge', 'd7edadade470')
    """
    if not isinstance(ref, str):
        return None
    name, sep, rest = ref.partition("@")
    if not sep or not rest.startswith(PIN_MARK):
        return None
    digits = rest[len(PIN_MARK):].lower()
    if not (MIN_PIN_DIGITS <= len(digits) <= 64) or not _HEX.fullmatch(digits):
        raise InvalidNameError(
            f"A content pin is NAME@sha256: and at least {MIN_PIN_DIGITS} (at most 64) hex digits of the "
            f"kernel's sha256 ('kreg show NAME' prints it). Received: ref={escape(ref[:100])}."
        )
    return check_name(name), digits


def escape(text: object, *, quote: bool = True) -> str:
    """Make ``text`` safe to print to a terminal: kreg's one sanitizer for metadata.

    Control characters (so OSC and CSI escape sequences: window titles, OSC 52
    clipboard writes, colours), bidirectional overrides and other invisible format
    characters are shown as ``\\xNN`` / ``\\uNNNN`` escapes, never emitted.

    Args:
        text: what to show (not a string: its ``str``).
        quote: quote it as Python would (for names inside messages), escaping all
            non-ASCII too; ``False`` keeps printable Unicode and adds no quotes (for
            descriptions and authors in tables).

    Example:
        >>> escape("a\\x1b]0;owned\\x07b", quote=False)
        'a\\\\x1b]0;owned\\\\x07b'
    """
    text = str(text)
    if quote:
        return repr(text) if text.isprintable() and text.isascii() else ascii(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def natural_key(text: str) -> list[object]:
    """Sort key that orders ``gauss_3`` before ``gauss_11``.

    Example:
        >>> sorted(["gauss_11", "gauss_3"], key=natural_key)
        ['gauss_3', 'gauss_11']
    """
    parts: list[object] = _NATURAL_RE.split(text)  # digit runs land at the odd indices
    parts[1::2] = map(int, parts[1::2])  # type: ignore[arg-type]
    return parts


def sort_key(name: str) -> str:
    """A string whose plain order is the natural order of names: listings sort on it in C.

    Each run of digits becomes ``!``, one character for its length without leading zeros,
    then those digits, so a longer number sorts after a shorter one; ``!`` sorts below every
    character a name may hold, so a text part that ends sorts before one that goes on. A tab
    (below ``!``) ends the key in a listing entry, so a name that is a prefix of another sorts
    first. Orders exactly as :func:`natural_key` wherever that key tells two names apart.

    Example:
        >>> sort_key("gauss_11") > sort_key("gauss_3")
        True
    """
    return _NATURAL_RE.sub(_number_key, name)


def _number_key(digits: re.Match[str]) -> str:
    number = digits[0].lstrip("0") or "0"
    return f"!{chr(0x30 + len(number))}{number}"


def match(
    names: Iterable[str],
    patterns: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names matching any of ``patterns`` and none of ``exclude``, naturally sorted.

    Example:
        >>> match(["gauss_11", "gauss_3", "sobel_x"], ["gauss*"])
        ['gauss_3', 'gauss_11']
    """
    patterns = [p for p in patterns or ("*",)]
    if "*" in patterns:
        kept = set(names)  # the common `kreg list`: no pattern work at all
    else:
        wanted = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
        kept = {n for n in names if wanted(n)}
    if exclude:
        unwanted = re.compile("|".join(fnmatch.translate(p) for p in exclude)).match
        kept = {n for n in kept if not unwanted(n)}
    return sorted(kept, key=natural_key)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A " Did you mean ...?" sentence for ``name``, or "" when nothing is close."""
    import difflib  # only on the error path

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
