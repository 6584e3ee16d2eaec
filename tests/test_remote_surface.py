"""The local store's own tests of the registry surface, run again on S3 (SeaweedFS).

Every test of ``test_store.py`` that speaks only the Registry API (no file of the directory
looked at) is collected here a second time with ``reg`` on a fresh ``s3://`` registry, so the
two backends answer the same tests. Tests that tamper with files on disk stay local; their
remote counterparts are in ``test_remote*.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import registry
from test_store import (  # noqa: F401 - collected again here, with the fixture below
    test_add_then_load_gives_the_same_bytes_and_record,
    test_array_is_read_only_and_the_callers_array_is_untouched,
    test_bad_names_say_what_is_allowed,
    test_bad_values_say_what_was_received,
    test_convolution_kernels_are_flipped_and_recorded,
    test_identical_content_returns_the_latest_version,
    test_list_filters_and_sorts_naturally,
    test_oihw_is_converted_to_hwio_and_back,
    test_removed_versions_are_never_reissued,
    test_same_values_other_dtype_is_a_new_version,
    test_verify_is_clean_on_a_fresh_registry,
    test_verify_reports_progress,
    test_versions_are_immutable_and_increase,
)


@pytest.fixture
def reg(remote_url: str) -> Iterator[registry.Registry]:
    """An empty registry on S3 and on Azure Blob without the built-in layer (overrides the local one)."""
    with registry.Registry(remote_url, builtins=False) as r:
        yield r
