"""A catalog that cannot be written is a clear, specific error (not a 500)."""

import errno

import pytest

from orchestrator.errors import catalog_not_saved


@pytest.mark.parametrize("code, status, error_code", [
    (errno.ENOSPC, 507, "catalog_storage_full"),
    (errno.EDQUOT, 507, "catalog_storage_full"),
    (errno.EROFS, 503, "catalog_not_writable"),
    (errno.EACCES, 503, "catalog_not_writable"),
])
def test_write_failures_map_to_a_status_and_code(code, status, error_code):
    error = catalog_not_saved("/app/config/models.yaml", OSError(code, "some reason"))
    body = error.response()
    assert (error.status, error.code) == (status, error_code)
    assert body.status_code == status and b"/app/config/models.yaml" in body.body and b"unchanged" in body.body
