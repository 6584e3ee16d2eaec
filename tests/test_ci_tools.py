"""The tools the security tests need are present: locally a missing one skips, in CI it fails."""

from __future__ import annotations

import pytest

from conftest import SECURITY_TOOLS, require_tool


@pytest.mark.parametrize("tool", sorted(SECURITY_TOOLS))
def test_security_tool_is_installed(tool: str) -> None:
    """strace watches which files libhdf5 opens; gcc builds the marker HDF5 plugin."""
    assert require_tool(tool)
