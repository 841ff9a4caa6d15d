"""FPGA programming with a real tool: a small script each test writes itself.

The script stands in for ``fpgaconf``/``xbmgmt``: it records its arguments, and loads
"a function" by writing an AFU id into the fake tree, as the kernel would show one.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.setup.common import Plan, Progress, SetupConfig, SetupFailed
from accel.driver.setup.fpga import parse_tool_template, plan_program
from accel.driver.setup.registry import OperationRegistry
from accel.errors import InvalidInput
from accel.internal.setup_schemas import ProgramFpga, SetupCall
from accel.states import OperationState

PAC = "0000:86:00.0"
AFU_ID = "d8424dc4-a4a3-c413-f89e-433683f9040b"


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def bitstreams(tmp_path: Path) -> Path:
    folder = tmp_path / "bitstreams"
    folder.mkdir()
    (folder / "nlb0.gbs").write_bytes(b"GBS\x00bitstream")
    return folder


def config(tool: str, folder: Path | None, time_limit: float = 600.0) -> SetupConfig:
    return SetupConfig(
        program_tool=parse_tool_template(tool), bitstream_dir=folder, timeout=time_limit
    )


def program(setup: SetupConfig, bitstream: str = "nlb0.gbs") -> Plan:
    return plan_program(PAC, ProgramFpga(action="program", bitstream=bitstream), setup)


def run(plan: Plan) -> Progress:
    progress = Progress()
    asyncio.run(plan.run(progress))
    return progress


def test_the_tool_runs_with_its_placeholders_filled_and_loads_the_function(
    tmp_path: Path, gpu_server: FakeSysfs
) -> None:
    folder = bitstreams(tmp_path)
    afu = gpu_server.device_dir(PAC) / "fpga_region/region0/dfl-port.0/afu_id"
    afu.parent.mkdir(parents=True)
    afu.write_text("00000000-0000-0000-0000-000000000000\n")
    args = tmp_path / "args"
    tool = script(
        tmp_path / "fpgaconf",
        f'for a in "$@"; do echo "$a" >> {args}; done\necho {AFU_ID} > {afu}\necho programmed\n',
    )
    plan = program(config(f"{tool} -B 0x{{bus}} --device={{address}} {{bitstream}}", folder))
    progress = run(plan)
    assert args.read_text().splitlines() == [
        "-B",
        "0x86",
        f"--device={PAC}",
        str((folder / "nlb0.gbs").resolve()),
    ]
    assert afu.read_text().strip() == AFU_ID
    assert progress.steps == [f"ran {tool} -B 0x86 --device={PAC} {folder.resolve()}/nlb0.gbs"]


def test_checking_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tool = script(tmp_path / "tool", f"touch {marker}\n")
    plan = program(config(f"{tool} {{bitstream}}", bitstreams(tmp_path)))
    assert plan.steps == [f"run {tool} {(tmp_path / 'bitstreams/nlb0.gbs').resolve()}"]
    assert not marker.exists()


def test_arguments_are_never_read_by_a_shell(tmp_path: Path) -> None:
    args, marker = tmp_path / "args", tmp_path / "pwned"
    tool = script(tmp_path / "tool", f'for a in "$@"; do echo "$a" >> {args}; done\n')
    run(program(config(f"{tool} '; touch {marker}' {{bitstream}}", bitstreams(tmp_path))))
    assert args.read_text().splitlines()[0] == f"; touch {marker}"
    assert not marker.exists()


def test_the_tool_never_sees_the_internal_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCEL_INTERNAL_TOKEN", "the-deployment-secret-0123456789")
    monkeypatch.setenv("VENDOR_SETTING", "kept")
    seen = tmp_path / "environment"
    tool = script(tmp_path / "tool", f"env > {seen}\n")
    run(program(config(f"{tool} {{bitstream}}", bitstreams(tmp_path))))
    assert "VENDOR_SETTING=kept" in seen.read_text()
    assert "the-deployment-secret" not in seen.read_text()


def test_a_tool_that_fails_fails_the_operation_with_its_output(tmp_path: Path) -> None:
    tool = script(
        tmp_path / "tool", "echo checking image\necho 'error: bad image magic' >&2\nexit 3\n"
    )
    with pytest.raises(SetupFailed) as failed:
        run(program(config(f"{tool} {{bitstream}}", bitstreams(tmp_path))))
    assert "exited with status 3" in failed.value.message
    assert failed.value.message.endswith("checking image\nerror: bad image magic")


def test_a_tool_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    tool = script(tmp_path / "tool", f"echo started\necho $$ > {pid_file}\nexec sleep 600\n")
    with pytest.raises(SetupFailed) as failed:
        run(program(config(f"{tool} {{bitstream}}", bitstreams(tmp_path), time_limit=1.0)))
    assert "did not finish within 1 s and was killed" in failed.value.message
    assert failed.value.message.endswith("started")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_driver_that_stops_kills_the_tool_it_runs(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    tool = script(
        tmp_path / "tool",
        f"echo $$ > {pid_file}.new\nmv {pid_file}.new {pid_file}\nexec sleep 600\n",
    )
    plan = program(config(f"{tool} {{bitstream}}", bitstreams(tmp_path)))
    call = SetupCall.model_validate(
        {
            "operation": str(uuid.uuid4()),
            "kind": "FPGA",
            "address": PAC,
            "setup": {"action": "program", "bitstream": "nlb0.gbs"},
        }
    )

    async def scenario() -> int:
        async def rediscover() -> None:
            return None

        registry = OperationRegistry(rediscover)
        registry.start(call, plan)
        deadline = time.monotonic() + 30
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the tool never started"
            await asyncio.sleep(0.02)
        assert registry.progress(call.operation).state == OperationState.RUNNING
        await registry.close()
        return int(pid_file.read_text())

    pid = asyncio.run(scenario())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_bitstream_must_be_a_regular_file_inside_the_folder(tmp_path: Path) -> None:
    folder = bitstreams(tmp_path)
    outside = tmp_path / "secret.gbs"
    outside.write_text("not yours")
    (folder / "escape.gbs").symlink_to(outside)
    (folder / "up.gbs").symlink_to("../secret.gbs")
    (folder / "folder.gbs").mkdir()
    (folder / "inside.gbs").symlink_to("nlb0.gbs")
    tool = script(tmp_path / "tool", "exit 0\n")
    setup = config(f"{tool} {{bitstream}}", folder)
    for name in ("escape.gbs", "up.gbs"):
        with pytest.raises(InvalidInput, match="leads outside the bitstream folder"):
            program(setup, name)
    with pytest.raises(InvalidInput, match="is not a regular file"):
        program(setup, "folder.gbs")
    with pytest.raises(InvalidInput, match=r"there is no bitstream missing\.gbs"):
        program(setup, "missing.gbs")
    # A link that stays inside is fine; the tool gets the file it leads to.
    assert program(setup, "inside.gbs").steps == [f"run {tool} {folder.resolve()}/nlb0.gbs"]


def test_without_a_tool_or_a_folder_the_request_names_the_option_to_set(tmp_path: Path) -> None:
    request = ProgramFpga(action="program", bitstream="nlb0.gbs")
    with pytest.raises(InvalidInput, match="set --fpga-program-tool"):
        plan_program(PAC, request, SetupConfig(bitstream_dir=bitstreams(tmp_path)))
    with pytest.raises(InvalidInput, match="set --bitstream-dir"):
        plan_program(PAC, request, SetupConfig(program_tool=("fpgaconf", "{bitstream}")))


def test_a_tool_that_is_not_there_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not an executable here"):
        program(config(f"{tmp_path}/no-such-tool {{bitstream}}", bitstreams(tmp_path)))


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "empty"),
        ("fpgaconf {bitstream", "brace"),
        ("fpgaconf {image}", "placeholders are"),
        ("fpgaconf {address.__class__}", "placeholders are"),
        ("fpgaconf {bitstream!r}", "placeholders are"),
        ("fpgaconf {}", "placeholders are"),
        ("{bitstream} --run", "must be fixed"),
        ("fpgaconf 'unclosed", "cannot split"),
    ],
)
def test_bad_tool_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_tool_template(template)


def test_tool_templates_split_like_a_shell_and_keep_literal_braces() -> None:
    assert parse_tool_template(
        "xbmgmt program --device {address} --base --image '{bitstream}' --tag {{x}}"
    ) == (
        "xbmgmt",
        "program",
        "--device",
        "{address}",
        "--base",
        "--image",
        "{bitstream}",
        "--tag",
        "{{x}}",
    )
