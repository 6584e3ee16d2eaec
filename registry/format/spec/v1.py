"""Schema version 1 of the kernel record, as frozen pydantic models.

The JSON Schema in ``schema/v1/kernel-record.schema.json`` is generated from
these models (``make schema``) and a test fails when the two drift.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ..content import DTYPES, STORED_LAYOUTS
from ..names import MAX_NAME_LENGTH, NAME_PATTERN

SCHEMA_VERSION: Literal[1] = 1
LAYOUT_RANKS = STORED_LAYOUTS

DType = Literal["float16", "float32", "float64", "int8", "int16", "int32", "uint8"]
Layout = Literal["HW", "HWIO", "HWIM"]
Origin = Literal["builtin", "learned", "imported", "handmade", "generated"]
Operation = Literal["correlation", "convolution"]

def _no_dotdot(value: str) -> str:
    """A name never contains '..' (the pattern alone allows 'a..b'; JSON Schema says it with `not`)."""
    if ".." in value:
        raise ValueError("a kernel name must not contain '..'")
    return value


_NO_DOTDOT = Field(json_schema_extra={"not": {"pattern": r"\.\."}})
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex64 = Sha256  # an ed25519 public key, like a sha256, is 32 bytes in lowercase hex
KernelName = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH), AfterValidator(_no_dotdot), _NO_DOTDOT
]
KernelRef = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN[:-1] + r"@[1-9][0-9]*$", max_length=MAX_NAME_LENGTH + 12),
    AfterValidator(_no_dotdot),
    _NO_DOTDOT,
]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]*$", max_length=64)]
# Text never carries control characters (so no terminal escape sequences: OSC window titles,
# OSC 52 clipboard writes, CSI) nor bidirectional overrides; long text may hold \t and \n.
_INVISIBLE = r"\u200e\u200f\u202a-\u202e\u2066-\u2069"
_SHORT_TEXT = rf"^[^\x00-\x1f\x7f-\x9f{_INVISIBLE}]*$"
_LONG_TEXT = rf"^[^\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]*$"
_SHORT_RE, _LONG_RE = re.compile(_SHORT_TEXT), re.compile(_LONG_TEXT)


def _plain_line(value: str) -> str:
    """Short text holds no control character (not even a newline) and no bidirectional override."""
    if not _SHORT_RE.match(value):
        raise ValueError("must not contain control characters (terminal escape sequences, newlines) "
                         "or bidirectional overrides")
    return value


def _plain_text(value: str) -> str:
    """Long text holds no control character but tab and newline, and no bidirectional override."""
    if not _LONG_RE.match(value):
        raise ValueError("must not contain control characters (terminal escape sequences) other than tab "
                         "and newline, or bidirectional overrides")
    return value


ShortText = Annotated[str, StringConstraints(max_length=256), AfterValidator(_plain_line),
                      Field(json_schema_extra={"pattern": _SHORT_TEXT})]
LongText = Annotated[str, StringConstraints(max_length=8192), AfterValidator(_plain_text),
                     Field(json_schema_extra={"pattern": _LONG_TEXT})]
Reference = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_plain_line),
                      Field(json_schema_extra={"pattern": _SHORT_TEXT})]
# An SPDX license expression: ids, "+", parentheses and AND/OR/WITH.
License = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9.+() -]+$", max_length=256)
]
# JSON has no NaN or infinity; Python's json module would read and write them as bare words.
Finite = Annotated[float, Field(allow_inf_nan=False)]
ParamValue = Union[bool, int, Finite, ShortText]

# The Literal types spell the values out for the JSON Schema; they must say what _content enforces.
if get_args(DType) != DTYPES or get_args(Layout) != tuple(STORED_LAYOUTS):
    raise ImportError("registry.format.spec.v1 and registry.format.content disagree on dtypes or layouts")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Generator(_Frozen):
    """The built-in family and parameters that regenerate these values."""

    family: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    parameters: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)],
        ParamValue,
    ] = Field(default_factory=dict, max_length=64)


class Source(_Frozen):
    """Where learned values were taken from: framework, model, layer, checkpoint."""

    framework: ShortText | None = None
    framework_version: ShortText | None = None
    model: ShortText | None = None
    layer: ShortText | None = None
    checkpoint_sha256: Sha256 | None = None


class PackOrigin(_Frozen):
    """The pack a kernel arrived in."""

    name: ShortText
    sha256: Sha256
    author: ShortText | None = None
    public_key: Hex64 | None = Field(default=None, description="The key whose signature of the pack verified.")
    created_at: datetime | None = Field(
        default=None, description="The pack manifest's time (signed with it): import refuses an older pack "
        "from the same key and pack name over a newer one."
    )

    @field_validator("created_at")
    @classmethod
    def _created_at_is_utc(cls, value: datetime | None) -> datetime | None:
        """created_at carries a time zone and is stored in UTC."""
        if value is not None and value.tzinfo is None:
            raise ValueError("created_at must carry a time zone (UTC)")
        return None if value is None else value.astimezone(timezone.utc)


class Provenance(_Frozen):
    """Where a kernel came from, who made it, under which license."""

    origin: Origin
    created_at: datetime
    author: ShortText | None = None
    description: LongText = ""
    references: tuple[Reference, ...] = Field(
        default=(), max_length=64
    )
    license: License | None = None
    generator: Generator | None = None
    source: Source | None = None
    source_layout: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,6}$")] | None = None
    source_operation: Operation = "correlation"
    parent: KernelRef | None = None
    pack: PackOrigin | None = None

    @field_validator("created_at")
    @classmethod
    def _created_at_is_utc(cls, value: datetime) -> datetime:
        """created_at carries a time zone and is stored in UTC."""
        if value.tzinfo is None:
            raise ValueError("created_at must carry a time zone (UTC)")
        return value.astimezone(timezone.utc)


class Separable(_Frozen):
    """1-D factors of a rank-1 ``HW`` kernel: ``kernel == outer(column, row)``."""

    column: tuple[Finite, ...] = Field(min_length=1, max_length=4096)
    row: tuple[Finite, ...] = Field(min_length=1, max_length=4096)


# What pydantic checks in a model validator, said in JSON Schema where it can be: the rank a
# layout implies, a single bias value and no separable factors for anything but HW. The
# lengths of `bias` (HWIO, HWIM) and of the factors depend on the values of `shape`, which
# JSON Schema cannot compare; schema/FORMAT.md lists those rules for readers to check in code.
_LAYOUT_RULES = {
    "allOf": [
        {
            "if": {"properties": {"layout": {"const": "HW"}}, "required": ["layout"]},
            "then": {"properties": {"shape": {"minItems": 2, "maxItems": 2},
                                    "bias": {"anyOf": [{"type": "array", "minItems": 1, "maxItems": 1},
                                                       {"type": "null"}]}}},
            "else": {"properties": {"shape": {"minItems": 4, "maxItems": 4}, "separable": {"type": "null"}}},
        }
    ],
    "$comment": "Also required, beyond JSON Schema: len(bias) == shape[3] (HWIO) or shape[2] * shape[3] "
    "(HWIM); len(separable.column) == shape[0] and len(separable.row) == shape[1]. See schema/FORMAT.md.",
}


class KernelRecord(_Frozen):
    """One immutable kernel version: what its values are and where they came from."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, json_schema_extra=_LAYOUT_RULES)

    schema_version: Literal[1] = SCHEMA_VERSION
    name: KernelName
    version: int = Field(
        ge=0,
        description="Assigned by the store from 1 (0 marks a kernel generated in memory, never stored).",
        json_schema_extra={"minimum": 1},
    )
    shape: tuple[Annotated[int, Field(ge=1, le=2**31)], ...] = Field(min_length=2, max_length=4)
    dtype: DType
    layout: Layout
    operation: Literal["correlation"] = "correlation"
    normalization: ShortText | None = None
    separable: Separable | None = None
    bias: tuple[Finite, ...] | None = Field(
        default=None, max_length=65536, description="Per-output-channel bias learned with the kernel."
    )
    tags: tuple[Tag, ...] = Field(default=(), max_length=64)
    provenance: Provenance
    sha256: Sha256

    @model_validator(mode="after")
    def _shape_fits_layout(self) -> KernelRecord:
        """The shape has the rank its layout implies; bias and separable factors fit it."""
        rank = LAYOUT_RANKS[self.layout]
        if len(self.shape) != rank:
            raise ValueError(
                f"layout {self.layout} needs a shape of rank {rank}, got {self.shape}"
            )
        if self.bias is not None:
            # HWIM output k is input channel k // M, multiplier k % M (the (H, W, 1, C*M) view).
            outputs = 1 if self.layout == "HW" else self.shape[3] * (self.shape[2] if self.layout == "HWIM" else 1)
            if len(self.bias) != outputs:
                raise ValueError(f"bias needs {outputs} values (one per output channel), got {len(self.bias)}")
        if self.separable is not None:
            if self.layout != "HW":
                raise ValueError("separable factors are recorded for HW kernels only")
            if (len(self.separable.column), len(self.separable.row)) != self.shape:
                raise ValueError("separable factors must have the lengths of the shape")
        return self

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"
