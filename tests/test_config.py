from pathlib import Path

from pacslite.core import config


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = config.load(environ={"PACSLITE_INSTANCE_DIR": str(tmp_path)})
    assert settings["HTTP_PORT"] == 8080
    assert settings["DICOM_PORT"] == 11112
    assert settings["AE_TITLE"] == "PACSLITE"
    assert settings["STORAGE_DIR"] == str(tmp_path / "storage")
    assert {"CR", "DR", "CT", "MR", "DSA"} <= {m["code"] for m in settings["MODALITIES"]}
    assert config.modality(settings, "DR")["dicom"] == "DX"
    assert config.modality(settings, "DSA")["dicom"] == "XA"


def test_instance_config_then_environment_override_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.py").write_text('HOSPITAL_NAME = "第一医院"\nHTTP_PORT = 9000\nAE_TITLE = "FROMFILE"\n',
                                        encoding="utf-8")
    env = {"PACSLITE_INSTANCE_DIR": str(tmp_path), "PACSLITE_HTTP_PORT": "9100", "PACSLITE_TIMEZONE": "UTC",
           "PACSLITE_SESSION_COOKIE_SECURE": "yes", "PACSLITE_STORAGE_DIR": str(tmp_path / "images"),
           "PACSLITE_STORAGE_HIGH_WATER_PERCENT": "92.5"}
    settings = config.load(environ=env)
    assert settings["HOSPITAL_NAME"] == "第一医院"  # from the file
    assert settings["AE_TITLE"] == "FROMFILE"
    assert settings["HTTP_PORT"] == 9100  # environment beats the file, converted to int
    assert settings["TIMEZONE"] == "UTC"
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["STORAGE_DIR"] == str(tmp_path / "images")
    assert settings["STORAGE_HIGH_WATER_PERCENT"] == 92.5  # a float setting stays a number


def test_a_malformed_environment_value_stops_with_a_message(tmp_path: Path) -> None:
    import pytest
    with pytest.raises(SystemExit, match="PACSLITE_HTTP_PORT"):
        config.load(environ={"PACSLITE_INSTANCE_DIR": str(tmp_path), "PACSLITE_HTTP_PORT": "eighty"})
