"""Schema version 1 of the kernel record, as frozen pydantic models.

The JSON Schema in ``schema/v1/kernel-record.schema.json`` is generated from
these models (``make schema``) and a test fails when the two drift.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .._content import DTYPES, STORED_LAYOUTS
from .._names import MAX_NAME_LENGTH, NAME_PATTERN

SCHEMA_VERSION: Literal[1] = 1
LAYOUT_RANKS = STORED_LAYOUTS

DType = Literal["float16", "float32", "float64", "int8", "int16", "int32", "uint8"]
Layout = Literal["HW", "HWIO", "HWIM"]
Origin = Literal["builtin", "learned", "imported", "handmade", "generated"]
Operation = Literal["correlation", "convolution"]

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
KernelName = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH)
]
KernelRef = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN[:-1] + r"@[1-9][0-9]*$", max_length=MAX_NAME_LENGTH + 12),
]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]*$", max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=8192)]
# An SPDX license expression: ids, "+", parentheses and AND/OR/WITH.
License = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9.+() -]+$", max_length=256)
]
ParamValue = Union[bool, int, float, str]

# The Literal types spell the values out for the JSON Schema; they must say what _content enforces.
if get_args(DType) != DTYPES or get_args(Layout) != tuple(STORED_LAYOUTS):
    raise ImportError("registry._spec.v1 and registry._content disagree on dtypes or layouts")


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


class Provenance(_Frozen):
    """Where a kernel came from, who made it, under which license."""

    origin: Origin
    created_at: datetime
    author: ShortText | None = None
    description: LongText = ""
    references: tuple[Annotated[str, StringConstraints(max_length=2048)], ...] = Field(
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

    column: tuple[float, ...] = Field(min_length=1, max_length=4096)
    row: tuple[float, ...] = Field(min_length=1, max_length=4096)


class KernelRecord(_Frozen):
    """One immutable kernel version: what its values are and where they came from."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: KernelName
    version: int = Field(ge=0, description="Assigned by the store from 1; 0 for a kernel generated on the fly.")
    shape: tuple[Annotated[int, Field(ge=1, le=2**31)], ...] = Field(min_length=2, max_length=4)
    dtype: DType
    layout: Layout
    operation: Literal["correlation"] = "correlation"
    normalization: ShortText | None = None
    separable: Separable | None = None
    bias: tuple[float, ...] | None = Field(
        default=None, max_length=65536, description="Per-output-channel bias learned with the kernel."
    )
    tags: tuple[Tag, ...] = Field(default=(), max_length=64)
    provenance: Provenance
    sha256: Sha256

    @field_validator("name")
    @classmethod
    def _name_has_no_dotdot(cls, value: str) -> str:
        """A name never contains '..' (the pattern alone allows 'a..b')."""
        if ".." in value:
            raise ValueError("a kernel name must not contain '..'")
        return value

    @model_validator(mode="after")
    def _shape_fits_layout(self) -> KernelRecord:
        """The shape has the rank its layout implies; bias and separable factors fit it."""
        rank = LAYOUT_RANKS[self.layout]
        if len(self.shape) != rank:
            raise ValueError(
                f"layout {self.layout} needs a shape of rank {rank}, got {self.shape}"
            )
        if self.bias is not None:
            outputs = {"HW": 1, "HWIO": self.shape[-1], "HWIM": self.shape[2] * self.shape[3]}[self.layout]
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
