"""``accel driver``'s setup flags: from the command line, the environment and the config file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import accel.driver.service
import accel.serving
from accel.cli.main import cli
from accel.driver.setup import SetupConfig

TOKEN = "driver-cli-test-token-0123456789"
# None removes a variable: whatever the test run's environment holds must not count.
CLEAN_ENVIRONMENT: dict[str, str | None] = {
    "ACCEL_INTERNAL_TOKEN": TOKEN,
    "ACCEL_CONFIG": None,
    "ACCEL_FPGA_PROGRAM_TOOL": None,
    "ACCEL_BITSTREAM_DIR": None,
    "ACCEL_SETUP_TIMEOUT": None,
}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[SetupConfig]:
    """The setup configuration of each driver the command would have served."""
    configs: list[SetupConfig] = []

    class Recorder:
        def __init__(self, settings: Any) -> None:
            self.settings = settings
            configs.append(settings.setup)

        def app(self) -> None:
            return None

    def serve(app: Any, sock: socket.socket, tls: Any = None, **settings: Any) -> None:
        sock.close()

    monkeypatch.setattr(accel.driver.service, "DriverService", Recorder)
    monkeypatch.setattr(accel.serving, "serve", serve)
    # The command's logging setup would outlive the test (on CliRunner's stderr).
    monkeypatch.setattr(accel.serving, "configure_logging", lambda *args: None)
    return configs


def driver(
    *args: str, config: Path | None = None, env: dict[str, str | None] | None = None
) -> Result:
    before = ["--config", str(config)] if config else []
    return CliRunner().invoke(
        cli,
        [*before, "driver", "--kind", "FPGA", "--agent", "http://127.0.0.1:9", *args],
        env={**CLEAN_ENVIRONMENT, **(env or {})},
    )


def test_setup_flags_come_from_flags_environment_and_config(
    tmp_path: Path, started: list[SetupConfig]
) -> None:
    folder = tmp_path / "bitstreams"
    by_flag = driver(
        "--fpga-program-tool",
        "fpgaconf -B 0x{bus} {bitstream}",
        "--bitstream-dir",
        str(folder),
        "--setup-timeout",
        "30",
    )
    assert by_flag.exit_code == 0, by_flag.output
    assert started[-1] == SetupConfig(
        program_tool=("fpgaconf", "-B", "0x{bus}", "{bitstream}"),
        bitstream_dir=folder,
        timeout=30.0,
    )

    by_env = driver(
        env={
            "ACCEL_FPGA_PROGRAM_TOOL": "xbmgmt program --device {address} --image {bitstream}",
            "ACCEL_BITSTREAM_DIR": str(folder),
            "ACCEL_SETUP_TIMEOUT": "45",
        }
    )
    assert by_env.exit_code == 0, by_env.output
    assert started[-1].program_tool == (
        "xbmgmt",
        "program",
        "--device",
        "{address}",
        "--image",
        "{bitstream}",
    )
    assert (started[-1].bitstream_dir, started[-1].timeout) == (folder, 45.0)

    config = tmp_path / "accel.toml"
    config.write_text(
        f'[driver]\nfpga-program-tool = "fpgaconf {{bitstream}}"\nbitstream-dir = "{folder}"\n'
    )
    by_file = driver(config=config)
    assert by_file.exit_code == 0, by_file.output
    assert started[-1] == SetupConfig(
        program_tool=("fpgaconf", "{bitstream}"), bitstream_dir=folder
    )

    default = driver()
    assert default.exit_code == 0, default.output
    assert started[-1] == SetupConfig()


def test_a_bad_tool_template_stops_the_driver_at_start(started: list[SetupConfig]) -> None:
    result = driver(env={"ACCEL_FPGA_PROGRAM_TOOL": "fpgaconf {image}"})
    assert result.exit_code == 2
    assert "--fpga-program-tool" in result.output and "placeholders are" in result.output
    assert started == []
    negative = driver("--setup-timeout", "0")
    assert negative.exit_code == 2 and "greater than 0" in negative.output
