"""Settings come from the environment, in the forms a user writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from labelbridge.settings import ConnectorSettings, JobQueueKind, Settings, TrainPolicy


@pytest.mark.parametrize(
    "raw", ["/data,/mnt/images", " /data , /mnt/images ", '["/data", "/mnt/images"]']
)
def test_lists_are_comma_separated_or_json(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSET_LOCAL_ROOTS", raw)
    monkeypatch.setenv("ASSET_ALLOWED_HOSTS", "ls.example.com")
    settings = Settings()
    assert settings.asset_local_roots == [Path("/data"), Path("/mnt/images")]
    assert settings.asset_allowed_hosts == ["ls.example.com"]


def test_sdk_names_and_typed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "/srv/models")
    monkeypatch.setenv("BASIC_AUTH_USER", "ml")
    monkeypatch.setenv("BASIC_AUTH_PASS", "s3cret")
    monkeypatch.setenv("JOB_QUEUE", "rq")
    monkeypatch.setenv("TRAIN_ON_ANNOTATIONS", "every")
    settings = Settings()
    assert settings.model_dir == Path("/srv/models") and settings.auth_enabled
    assert (
        settings.job_queue is JobQueueKind.rq and settings.train_on_annotations is TrainPolicy.every
    )
    masked = settings.masked()
    assert masked["basic_auth_pass"] == "********" and "s3cret" not in repr(settings)


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_connector_timeouts_default_to_label_studios(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = ConnectorSettings()
    assert (defaults.connection_timeout, defaults.timeout_health, defaults.timeout_setup) == (
        1,
        1,
        3,
    )
    assert (defaults.timeout_predict, defaults.timeout_train, defaults.timeout_default) == (
        100,
        30,
        100,
    )
    monkeypatch.setenv("ML_TIMEOUT_SETUP", "7.5")
    assert ConnectorSettings().timeout_setup == 7.5
