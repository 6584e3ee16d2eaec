"""The tools the security tests and the plain shell reader need: locally a missing one skips, in CI it fails."""

from __future__ import annotations

import pytest

from conftest import PLAIN_READER_TOOLS, SECURITY_TOOLS, require_tool


@pytest.mark.parametrize("tool", sorted(SECURITY_TOOLS))
def test_security_tool_is_installed(tool: str) -> None:
    """strace watches which files libhdf5 opens; gcc builds the marker HDF5 plugin."""
    assert require_tool(tool)


@pytest.mark.parametrize("tool", sorted(PLAIN_READER_TOOLS))
def test_plain_reader_tool_is_installed(tool: str) -> None:
    """tests/plain_reader.sh reads packs and registries with these alone (no HDF5 library)."""
    assert require_tool(tool)
