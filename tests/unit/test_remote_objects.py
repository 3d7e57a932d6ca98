"""The one line a failed object-store request becomes: what, where, and what to do (no network needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("obstore")

from engine.errors import RemoteStateError  # noqa: E402
from engine.state.objects import Bucket, parse_state_url  # noqa: E402


class GenericError(Exception):
    pass


def test_no_google_credentials_is_not_called_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off GCP, with no key, obstore asks the metadata server; a network that denies it with a 403 means
    no credentials were found, not that the bucket refused them."""
    for name in ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_SERVICE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    bucket = Bucket(parse_state_url("gs://acme/prod/state.duckdb"))
    exc = GenericError("Generic GCS error: Error performing token request: Error performing GET http://169.254.169.254"
                       "/computeMetadata/v1/instance/service-accounts/default/token - Server returned non-2xx status "
                       "code: 403 Forbidden")
    message = bucket._problem("list", exc).message
    assert "no credentials were found" in message and "GOOGLE_SERVICE_ACCOUNT" in message, message


def test_an_azure_url_without_an_account_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(RemoteStateError) as info:
        Bucket(parse_state_url("az://container/prod/state.duckdb"))
    assert "AZURE_STORAGE_ACCOUNT_NAME" in info.value.message, info.value.message
    assert "az://container/prod/state.duckdb" in info.value.message
