"""The ``easel`` command line, run in-process through its ``main``."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sd_parsers import ParserManager

from bot import app, event_loop
from bot.cli.main import main
from bot.jobs.broker import wire
from bot.jobs.broker import worker as broker_worker
from bot.jobs.retention import NothingPrunedFirst
from bot.process_end import SETTINGS_EXIT_STATUS
from bot.settings import Settings, load_settings, unknown_settings
from db import database
from db.database import connect, load_migrations
from inference.infotext import infotext_from_png, parse_infotext
from tests.prompts.test_explain import EXPLAIN_KEYS
from tests.support.checkpoint_files import stand_in_checkpoint
from tests.support.older_databases import database_at, sqlite_full
from tests.unit.test_settings import SETTING_NAMES


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, data written here


@pytest.fixture(autouse=True)
def umask_restored() -> Iterator[None]:
    """``main(["run"])`` makes the files of the process it runs in private (``os.umask``):
    here, the tests' own; the tests after it would make their files so."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_run_without_token_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "DISCORD_TOKEN is not set" in one_error_line(capsys)


def test_bad_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_DEVICES", "tpu")
    assert main(["explain", "a cat"]) == 2
    assert one_error_line(capsys).startswith("easel explain: error: EASEL_DEVICES='tpu' is invalid")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "a cat", "--size", "3x3", "--out", "o"], "multiple of 8 between 64 and 2048"),
        (
            ["render", "a cat", "--steps", "500", "--out", "o"],
            "steps must be a whole number between 1 and 150",
        ),
        (["render", "a cat", "--seed", "-7", "--out", "o"], "seed must be a whole number between"),
        (["explain", "a cat", "--steps", "0"], "steps must be a whole number between 1 and 150"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(argv) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_mask_without_a_picture_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "a cat", "--mask", "m.png", "--out", "o"]) == 2
    assert "--mask needs --init-image" in one_error_line(capsys)


def test_missing_init_image_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "a cat", "--init-image", "nope.png", "--out", "o"]) == 2
    assert "--init-image 'nope.png' is missing or not a file" in one_error_line(capsys)


def test_missing_argument_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--out", "o"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: prompt" in one_error_line(capsys)


def test_explain_prints_the_contract_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["explain", "a [cat:dog:5] <lora:ink:0.5>", "--seed", "3", "--steps", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == EXPLAIN_KEYS
    schedule = report["subprompts"][0]["schedule"]
    assert [entry["until_step"] for entry in schedule] == [5, 10]
    assert report["extra_networks"] == [{"kind": "lora", "name": "ink", "weight": 0.5}]


def test_explain_prints_strict_json_a_weight_no_finite_number_null_as_its_help_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is no JSON")

    assert main(["explain", "a cat <a:party:nan>", "--seed", "1"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert report["extra_networks"] == [{"kind": "a", "name": "party", "weight": None}]
    assert "<a:party> weight 'nan' is no finite number: written as null" in report["warnings"]
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert "(<a:x:nan>) is null" in " ".join(capsys.readouterr().out.split())


def test_tiny_model_then_render_writes_a_png_sd_parsers_reads(
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    status = main(
        [
            "render",
            "a (red:1.2) cat",
            "--seed",
            "1",
            "--steps",
            "2",
            "--size",
            "64x64",
            "--out",
            "out",
        ]
    )
    assert status == 0
    [printed] = capsys.readouterr().out.split()
    assert Path(printed) == Path("out") / "1.png"
    info = ParserManager().parse(tmp_path / printed)
    assert info is not None
    [sampler] = info.samplers
    assert sampler.name == "Euler a"
    assert sampler.parameters["seed"] == "1"
    assert sampler.prompts[0].value == "a (red:1.2) cat"
    assert sampler.model is not None and sampler.model.name == "tiny"


def test_render_writes_each_picture_of_a_varied_batch(
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A varied batch keeps its seed for every picture: each file is named by both seeds."""
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    arguments = ["render", "a cat", "--seed", "1", "--steps", "2", "--size", "64x64"]
    variation = ["--count", "2", "--variation-seed", "9", "--variation-strength", "0.3"]
    assert main([*arguments, *variation, "--out", "out"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(path) for path in printed] == [Path("out/1-9.png"), Path("out/1-10.png")]


def test_render_fast_records_fast_mode_in_the_png(
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    arguments = ["render", "a cat", "--fast", "--seed", "1", "--steps", "3", "--size", "64x64"]
    assert main([*arguments, "--out", "out"]) == 0
    [printed] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(printed).read_bytes())
    assert infotext is not None and parse_infotext(infotext)[2]["Fast"] == "DeepCache 3"


def test_render_takes_the_web_ui_s_schedule_type(
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    quick = ["--seed", "1", "--steps", "3", "--size", "64x64", "--out", "out"]
    karras = ["render", "a cat", "--sampler", "DPM++ 2M", "--schedule-type", "Karras"]
    assert main([*karras, *quick]) == 0
    [printed] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(printed).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")
    # The web UI's DDIM keeps its own timesteps: a schedule it cannot take is one line, exit 2.
    refused = ["render", "a cat", "--sampler", "DDIM", "--schedule-type", "Karras"]
    assert main([*refused, *quick]) == 2
    assert "Karras" in capsys.readouterr().err


def test_steps_that_are_no_whole_number_are_told_the_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["render", "a cat", "--steps", "1e3"])
    assert ended.value.code == 2
    assert one_error_line(capsys).endswith(
        "argument --steps: steps must be a whole number between 1 and 150, got '1e3'"
    )


def test_doctor_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ERR] settings: DISCORD_TOKEN is not set" in out
    assert (
        "[ERR] models: EASEL_MODELS_DIR=models does not exist: set it to the folder holding "
        "your checkpoints (or run `easel tiny-model models/tiny` to try Easel out)"
    ) in out
    assert "[ok ] database: data/easel.sqlite3 will be created" in out
    assert not Path("data").exists()  # the doctor looks, it does not build


def test_doctor_warns_of_a_misspelled_setting_without_failing_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path(".env").write_text("DISCORD_TOKEN=x.y.z\nEASEL_RETENTION_DAY=7\n")
    main(["doctor"])
    out, err = capsys.readouterr()
    assert (
        "[WARN] settings: EASEL_RETENTION_DAY (in .env) is not a setting of Easel, so it is "
        "ignored: did you mean EASEL_RETENTION_DAYS?"
    ) in out
    assert "EASEL_RETENTION_DAY" not in err  # said once, as the doctor's line
    assert "[ERR] settings" not in out


def test_a_misspelled_setting_is_warned_of_once_in_the_log_format_set(tmp_path: Path) -> None:
    """Said through the logging the command installs (a JSON line where a collector reads
    JSON), not before it as bare text: the real process, as an operator starts it."""
    Path(".env").write_text("EASEL_QUOTAA=1\nEASEL_LOG_FORMAT=json\n")
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    environment["PYTHONPATH"] = str(Path(__file__).parents[2])
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli.main", "explain", "a cat"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    warned = [line["message"] for line in lines if "EASEL_QUOTAA" in line["message"]]
    assert warned == [unknown_settings(Path(".env"))["EASEL_QUOTAA"]]
    assert "did you mean EASEL_" in warned[0]


def test_a_misspelled_setting_is_hinted_at_when_the_command_fails_before_logging(
    tmp_path: Path,
) -> None:
    """The misspelling is likely why a setting is missing: the hint comes before the error,
    once, though the worker stops before it sets up its logging."""
    Path(".env").write_text("EASEL_QUEUE_URLL=nats://127.0.0.1:4222\n")
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    environment["PYTHONPATH"] = str(Path(__file__).parents[2])
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli.main", "worker"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == SETTINGS_EXIT_STATUS
    assert done.stderr.splitlines() == [
        "EASEL_QUEUE_URLL (in .env) is not a setting of Easel, so it is ignored: "
        "did you mean EASEL_QUEUE_URL?",
        "easel worker: error: EASEL_QUEUE_URL is empty: set it to the broker the bot uses, "
        "e.g. nats://127.0.0.1:4222",
    ]


def test_doctor_says_why_a_checkpoint_is_not_offered(capsys: pytest.CaptureFixture[str]) -> None:
    Path("models").mkdir()
    Path("models/garbage.safetensors").write_bytes(bytes(range(256)) * 64)
    # A header for 64 bytes of data, 32 of them copied so far.
    header = json.dumps({"w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}}).encode()
    Path("models/copying.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bytes(32)
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ERR] model garbage: not offered: garbage.safetensors announces a" in out
    assert (
        f"[ERR] model copying: not offered: copying.safetensors is incomplete "
        f"({8 + len(header) + 32} of {8 + len(header) + 64} bytes): still copying? "
        "(a file is offered once whole: copy it elsewhere on the same disk, then move it in)"
    ) in out


def test_doctor_names_each_checkpoint_it_leaves_out_and_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint in a web UI subfolder is offered; a pickle checkpoint (not allowed) and a
    LoRA dropped among the checkpoints are named with the fix; so is a wrong captioner."""
    stand_in_checkpoint(Path("models/Stable-diffusion/SDXL/inner.safetensors"))
    Path("models/old.ckpt").write_bytes(b"pickled")
    lora = {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(2, 2)}
    save_file(lora, "models/mylora.safetensors")
    monkeypatch.setenv("EASEL_CAPTIONER_DIR", "models/Stable-diffusion")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ok ] models: 1 in models: inner\n" in out
    assert (
        "[WARN] models: left out, pickle files: old.ckpt; convert them to .safetensors or set "
        "EASEL_ALLOW_PICKLE=1\n"
    ) in out
    assert (
        "[ERR] model mylora: not offered: mylora.safetensors looks like a LoRA, not a "
        "checkpoint: move it to models/lora/\n"
    ) in out
    assert (
        "[ERR] captioner: no captioning model in models/Stable-diffusion (EASEL_CAPTIONER_DIR): "
        "it needs a BLIP captioning model folder with config.json\n"
    ) in out


def test_doctor_says_when_the_models_folder_is_a_file_and_hints_at_the_configured_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_checkpoint(Path("x.safetensors"))
    monkeypatch.setenv("EASEL_MODELS_DIR", "x.safetensors")
    assert main(["doctor"]) == 1
    assert (
        "[ERR] models: EASEL_MODELS_DIR=x.safetensors is a file, not a folder: set it to the "
        "folder holding your checkpoints\n"
    ) in capsys.readouterr().out
    Path("elsewhere").mkdir()
    monkeypatch.setenv("EASEL_MODELS_DIR", "elsewhere")
    assert main(["doctor"]) == 1
    assert (
        "[ERR] models: no checkpoint in elsewhere: copy .safetensors files or diffusers folders "
        "there (or run `easel tiny-model elsewhere/tiny` to try Easel out)\n"
    ) in capsys.readouterr().out


def test_doctor_on_an_older_database_says_what_is_pending_and_migrates_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An admin may try a new image's doctor on the live volume: that must not upgrade it
    for good (the old Easel would then refuse the newer schema)."""
    Path("data").mkdir()
    database_at(Path("data/easel.sqlite3"), 10)
    main(["doctor"])
    pending = len(load_migrations()) - 10
    assert (
        f"[ok ] database: data/easel.sqlite3 at schema 10; {pending} migrations pending "
        "(run `easel run` to apply; back up first)"
    ) in capsys.readouterr().out
    with sqlite3.connect("data/easel.sqlite3") as after:
        assert after.execute("PRAGMA user_version").fetchone()[0] == 10
    after.close()


def test_doctor_reads_a_database_it_cannot_open_to_read_as_a_frozen_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A WAL database at rest read by a user without write access to its folder: SQLite
    cannot make its -shm file ("attempt to write a readonly database"; simulated, as the
    tests may run as root, whom no mode keeps out); doctor reads it frozen, and says so."""
    Path("data").mkdir()
    asyncio.run(_created(Path("data/easel.sqlite3")))
    opened = database._opened_to_read

    refusal = sqlite3.OperationalError("attempt to write a readonly database")
    refusal.sqlite_errorcode = sqlite3.SQLITE_READONLY

    async def without_write_access(path: Path, query: str, busy_timeout_s: float) -> Any:
        if "immutable=1" not in query:
            raise refusal
        return await opened(path, query, busy_timeout_s)

    monkeypatch.setattr(database, "_opened_to_read", without_write_access)
    main(["doctor"])
    assert (
        f"[ok ] database: data/easel.sqlite3 at schema version {len(load_migrations())} "
        f"({database.READ_AS_FROZEN})"
    ) in capsys.readouterr().out
    # A database busy (a start's exclusive lock) is said as such, not read frozen.
    refusal = sqlite3.OperationalError("database is locked")
    refusal.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ERR] database: data/easel.sqlite3: database is locked" in out, out
    assert database.READ_AS_FROZEN not in out


async def _created(path: Path) -> None:
    await (await connect(path)).close()


def test_doctor_warns_of_stored_files_named_outside_the_data_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database tampered with (or another installation's) naming pictures outside the data
    folder, which Easel reads as missing: one line with their count and one of them."""
    Path("data").mkdir()
    asyncio.run(_created(Path("data/easel.sqlite3")))
    main(["doctor"])
    assert "stored files" not in capsys.readouterr().out  # none named: nothing said
    job = "0123456789abcdef"
    inside = str(Path("data/images/legacy/0.png").resolve())  # absolute, yet inside
    with sqlite3.connect("data/easel.sqlite3") as raw:
        raw.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at) VALUES (?, 'imagine', 'done', 7, 5, 9, '{}', 0)",
            (job,),
        )
        raw.executemany(
            "INSERT INTO images (job_id, idx, seed, path, infotext, width, height)"
            " VALUES (?, ?, 1, ?, '', 64, 64)",
            [
                (job, 0, f"images/{job}/0.png"),
                (job, 1, f"images/{job}/../../../secret.png"),
                (job, 2, "/etc/passwd"),
                (job, 3, inside),
                (job, 4, f"images/{job}/../{job}/4.png"),  # ``..`` yet inside
                (job, 5, "images/."),  # the folder itself
                (job, 6, f"images/{job}/6.png\0"),  # a NUL byte
            ],
        )
    raw.close()
    main(["doctor"])
    out = capsys.readouterr().out
    assert (
        "[WARN] stored files: 4 stored file names in the database lie outside data's images/ "
        "and inputs/, read as missing files (a database tampered with, or another "
        "installation's?), e.g. "
    ) in out, out
    outside = (
        "/etc/passwd",
        f"images/{job}/../../../secret.png",
        "images/.",
        f"images/{job}/6.png\0",
    )
    assert any(f"e.g. {name!r}" in out for name in outside)


GIB = 1024**3


@pytest.mark.parametrize(
    ("total", "free", "said"),
    [
        (100 * GIB, 50 * GIB, "[ok ] data disk: 50.0 GiB free of 100.0 GiB (50.0%) on data\n"),
        (100 * GIB, 4 * GIB, "[WARN] data disk: 4.0 GiB free of 100.0 GiB (4.0%) on data: low"),
        (GIB, 32 * 1024**2, "[WARN] data disk: 32.0 MiB free of 1.0 GiB (3.1%) on data: low"),
        # Above 5 % of a small disk, yet less than a start needs.
        (512 * 1024**2, 60 * 1024**2, "[WARN] data disk: 60.0 MiB free of 512.0 MiB (11.7%)"),
    ],
)
def test_doctor_says_how_much_the_data_disk_has_free_and_warns_when_it_is_low(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    total: int,
    free: int,
    said: str,
) -> None:
    """Read where the data folder will be made (it is not yet); a warning below the room a
    start needs (64 MiB) or under 5 % of the disk."""
    read: list[Path] = []

    def usage(path: Path) -> shutil._ntuple_diskusage:
        read.append(Path(path))
        return shutil._ntuple_diskusage(total, total - free, free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    main(["doctor"])
    out = capsys.readouterr().out
    assert said in out, out
    if "[WARN]" in said:
        assert "a start needs 64.0 MiB" in out
    assert read == [Path()]


def test_doctor_names_a_newer_database(capsys: pytest.CaptureFixture[str]) -> None:
    Path("data").mkdir()
    with sqlite3.connect("data/easel.sqlite3") as newer:
        newer.execute("PRAGMA user_version = 999")
    newer.close()
    assert main(["doctor"]) == 1
    assert (
        "[ERR] database: data/easel.sqlite3: database schema is version 999 but this Easel knows"
    ) in capsys.readouterr().out


def test_a_data_folder_that_cannot_be_made_is_named_by_run_and_doctor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("taken").write_text("a file where the data folder should go")
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setenv("EASEL_DATA_DIR", "taken/data")
    assert main(["run"]) == 2
    assert one_error_line(capsys) == (
        "easel run: error: EASEL_DATA_DIR='taken/data': taken is a file, not a folder"
    )
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[ERR] database: EASEL_DATA_DIR='taken/data': taken is a file, not a folder" in out


def test_a_data_folder_under_one_this_user_cannot_enter_is_named_by_run_and_doctor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Simulated (the tests may run as root, whom no mode keeps out): "locked" is a 0700 folder
    # of another user, so what lies under it cannot even be looked at.
    Path("locked").mkdir()
    real_stat, real_access = os.stat, os.access

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).startswith("locked/"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        return str(path) != "locked" and real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setenv("EASEL_DATA_DIR", "locked/data")
    problem = (
        f"EASEL_DATA_DIR='locked/data': this user (uid {os.getuid()}) cannot enter or write to "
        "locked; give it to that user or choose another folder"
    )
    assert main(["run"]) == 2
    assert one_error_line(capsys) == f"easel run: error: {problem}"
    assert main(["doctor"]) == 1
    assert f"[ERR] database: {problem}" in capsys.readouterr().out


async def _start_with_a_newer_database(settings: Settings, **_: object) -> None:
    """``bot.app.run``'s first steps that can fail so, without Discord: the database opened."""
    settings.require_data_dir()
    await connect(settings.database_path)


async def _start_without_the_broker(settings: Settings, **_: object) -> None:
    """... and the broker reached (timeout shortened: the port refuses at once anyway)."""
    await wire.connect(settings.queue_url, "easel-test", timeout_s=2)


@pytest.mark.parametrize(
    ("start", "named"),
    [
        (_start_with_a_newer_database, "database schema is version 999 but this Easel knows"),
        (_start_without_the_broker, "cannot reach the NATS server at nats://127.0.0.1:"),
    ],
    ids=["newer-database", "broker"],
)
def test_run_names_a_newer_database_or_an_unreachable_broker_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    start: Callable[[Settings], Awaitable[None]],
    named: str,
) -> None:
    Path("data").mkdir()
    with sqlite3.connect("data/easel.sqlite3") as newer:
        newer.execute("PRAGMA user_version = 999")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("EASEL_QUEUE_URL", f"nats://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setattr(app, "run", start)
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"easel run: error: {named}")
    assert "EASEL_DATA_DIR" in line or "EASEL_QUEUE_URL" in line


def test_a_read_only_data_folder_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("data").mkdir()
    read_only = os.statvfs_result((0,) * 8 + (os.ST_RDONLY, 255))
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: False)
    monkeypatch.setattr(os, "statvfs", lambda path: read_only)
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    assert main(["run"]) == 2
    assert one_error_line(capsys) == (
        "easel run: error: EASEL_DATA_DIR='data': data is on a read-only mount; mount it read-write"
    )


def _start_that_finds_no_room(error: BaseException) -> Callable[..., Awaitable[None]]:
    async def start(settings: Settings, **_: object) -> None:
        raise error

    return start


@pytest.mark.parametrize(
    ("retention_days", "error", "remedy"),
    [
        (30, None, "free space there, or lower EASEL_RETENTION_DAYS (now 30) and start again,"),
        (0, None, "free space there, or set EASEL_RETENTION_DAYS above 0 (now 0: kept forever)"),
        (
            30,
            NothingPrunedFirst("1 schema migration(s) pending"),
            "free space there by hand (nothing was pruned before the start: 1 schema "
            "migration(s) pending)",
        ),
        (30, OSError(errno.ENOSPC, "No space left on device", "data/images/1/0.png"), "free "),
    ],
    ids=["retention", "kept-forever", "nothing-pruned", "a-file-in-it"],
)
def test_a_full_data_folder_is_named_with_what_can_free_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    retention_days: int,
    error: BaseException | None,
    remedy: str,
) -> None:
    """The data folder not made yet (the start failed first): its disk's free space still."""
    failure = error or sqlite_full()
    if isinstance(failure, NothingPrunedFirst):
        failure.__cause__ = sqlite_full()
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setenv("EASEL_RETENTION_DAYS", str(retention_days))
    monkeypatch.setattr(app, "run", _start_that_finds_no_room(failure))
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    data_dir = Path("data").resolve()
    assert line.startswith(f"easel run: error: EASEL_DATA_DIR={data_dir} is full ("), line
    assert re.search(r"is full \(\d+ bytes free; (database or disk is full|.+No space)", line)
    assert f"): {remedy}" in line


def test_a_full_disk_elsewhere_is_named_by_the_file_that_found_it_full(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A compiler's cache in a full /tmp: the data folder is not the one to free."""
    cache = tmp_path.parent / "torchinductor_easel" / "kernel.so"
    full = OSError(errno.ENOSPC, "No space left on device", str(cache))
    compiling = RuntimeError("compiling failed")
    compiling.__context__ = full  # raised while handling the write's error
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setattr(app, "run", _start_that_finds_no_room(compiling))
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert "EASEL_DATA_DIR" not in line
    assert line.startswith(f"easel run: error: {cache}: its disk is full ("), line
    assert re.search(r"\(\d+ bytes free; \[Errno 28\] No space left on device: ", line), line
    assert line.endswith("): free space there"), line


def test_a_full_disk_that_names_no_file_is_not_blamed_on_a_roomy_data_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write's ENOSPC names no file (a file object's); the data folder has room (this test's
    disk: at least 64 MiB assumed free), so the line does not send the operator there."""
    Path("data").mkdir()
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(app, "run", _start_that_finds_no_room(full))
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    data_dir = Path("data").resolve()
    assert line.startswith(
        "easel run: error: a write found its disk full ([Errno 28] No space left on device), not"
        f" EASEL_DATA_DIR's ({data_dir}: "
    ), line
    assert line.endswith("bytes free): free space on the disk it wrote to (TMPDIR, a cache's)")


@pytest.mark.parametrize("listening", [True, False], ids=["reachable", "unreachable"])
@pytest.mark.parametrize(
    ("credentials", "shown"),
    [("easel:s3cret-pass@", "easel:***@"), ("s3cret-token@", "***@")],
    ids=["user-password", "token"],
)
def test_doctor_never_prints_the_broker_s_credentials(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    listening: bool,
    credentials: str,
    shown: str,
) -> None:
    with socket.socket() as broker:
        broker.bind(("127.0.0.1", 0))
        if listening:
            broker.listen()
        port = broker.getsockname()[1]
        monkeypatch.setenv("EASEL_QUEUE_URL", f"nats://{credentials}127.0.0.1:{port}")
        main(["doctor"])
        settings = repr(load_settings())
    out = capsys.readouterr().out
    assert "s3cret" not in out + settings
    verdict = "[ok ] broker: " if listening else "[ERR] broker: cannot reach "
    assert f"{verdict}nats://{shown}127.0.0.1:{port}" in out


def test_a_bad_queue_url_is_named_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_QUEUE_URL", "http://easel:s3cret@broker:4222")
    assert main(["worker"]) == 2
    line = one_error_line(capsys)
    assert "EASEL_QUEUE_URL='http://easel:***@broker:4222' is invalid" in line
    assert "s3cret" not in line
    assert main(["doctor"]) == 1  # one of its checks' lines
    out = capsys.readouterr().out
    assert "[ERR] settings: EASEL_QUEUE_URL='http://easel:***@broker:4222' is invalid" in out
    assert "s3cret" not in out


def test_tiny_upscaler_and_the_doctor_s_upscaler_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["tiny-model", "--upscaler", "4", str(tmp_path / "upscalers")]) == 0
    assert capsys.readouterr().out.strip().endswith("upscalers/tiny-esrgan-4x.safetensors")
    (tmp_path / "ESRGAN").mkdir()
    (tmp_path / "ESRGAN" / "4x-UltraSharp.pth").write_bytes(b"a pickle")
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path))
    main(["doctor"])
    out = capsys.readouterr().out
    assert (
        "[ok ] upscalers: Lanczos, tiny-esrgan-4x; default tiny-esrgan-4x (left out, pickle " in out
    )
    assert "4x-UltraSharp.pth; convert them to .safetensors or set EASEL_ALLOW_PICKLE=1)" in out
    monkeypatch.setenv("EASEL_ALLOW_PICKLE", "1")
    monkeypatch.setenv("EASEL_DEFAULT_UPSCALER", "nope")
    main(["doctor"])
    out = capsys.readouterr().out
    assert (
        "[ERR] upscalers: EASEL_DEFAULT_UPSCALER: unknown upscaler 'nope': it is not installed on "
        "this device; installed: "
    ) in out
    assert "Lanczos, 4x-UltraSharp, tiny-esrgan-4x" in out  # pickles allowed: listed
    monkeypatch.delenv("EASEL_DEFAULT_UPSCALER")
    for hires, ok in (("latent (bicubic)", True), ("tiny-esrgan-4x", True), ("Latent 2", False)):
        monkeypatch.setenv("EASEL_HIRES_UPSCALER", hires)
        main(["doctor"])
        out = capsys.readouterr().out
        assert ("[ok ] upscalers" in out) == ok, out
    assert "EASEL_HIRES_UPSCALER: unknown upscaler 'Latent 2'" in out
    assert "installed: Lanczos, 4x-UltraSharp, tiny-esrgan-4x (or Latent)" in out


@pytest.fixture
def rendered_cat(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """The path of a 64x64 render (seed 3) by `easel render` with the tiny models."""
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    assert main(["render", "a cat", "--seed", "3", "--steps", "2", "--out", "first"]) == 0
    [first] = capsys.readouterr().out.split()
    return first


def test_render_img2img_and_variation_from_the_command_line(
    rendered_cat: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = rendered_cat
    argv = [
        "render",
        "a dog",
        "--seed",
        "4",
        "--steps",
        "4",
        "--init-image",
        first,
        "--strength",
        "0.5",
        "--variation-seed",
        "9",
        "--variation-strength",
        "0.25",
        "--out",
        "second",
    ]
    assert main(argv) == 0
    [second] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(second).read_bytes())
    assert infotext is not None
    _, _, params = parse_infotext(infotext)
    assert params["Denoising strength"] == 0.5
    assert params["Variation seed"] == 9 and params["Variation seed strength"] == 0.25
    assert params["Size"] == "64x64"  # the init picture's size


def test_explain_warns_about_loras_that_are_not_installed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    from inference.tiny import write_tiny_lora

    write_tiny_lora(tmp_path / "models" / "lora" / "ink.safetensors", "sd15", 0)
    assert main(["explain", "a cat <lora:ink:0.5> <lora:glow:1>", "--seed", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [n["name"] for n in report["extra_networks"]] == ["ink", "glow"]
    assert any("glow" in warning for warning in report["warnings"])
    assert not any("'ink'" in warning for warning in report["warnings"])


def test_upscale_from_the_command_line(
    rendered_cat: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = rendered_cat
    assert main(["upscale", first, "--scale", "4", "--out", "big"]) == 0
    [big] = capsys.readouterr().out.split()
    with Image.open(big) as image:
        assert image.size == (256, 256)
    infotext = infotext_from_png(Path(big).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    assert (params["Seed"], params["Postprocess upscaler"]) == (3, "tiny-esrgan-2x")
    assert main(["upscale", first, "--upscaler", "nope", "--out", "never"]) == 2
    assert "unknown upscaler 'nope'; installed: Lanczos, tiny-esrgan-2x" in one_error_line(capsys)
    assert not Path("never").exists()


def test_run_serves_on_uvloop_where_installed_else_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``easel run`` (and ``easel worker``, through the same ``bot.event_loop.run``) picks
    uvloop's event loop when it can import it, asyncio's own when it cannot (Windows)."""
    uvloop = pytest.importorskip("uvloop")  # a dependency wherever it has a build
    loops: list[asyncio.AbstractEventLoop] = []

    async def start(settings: Settings, **_: object) -> int:
        loops.append(asyncio.get_running_loop())
        return 0

    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setattr(app, "run", start)
    assert main(["run"]) == 0
    [on_uvloop] = loops
    assert isinstance(on_uvloop, uvloop.Loop)
    assert event_loop.describe(on_uvloop) == f"uvloop {uvloop.__version__}"
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed
    assert main(["run"]) == 0
    on_asyncio = loops[1]
    assert not isinstance(on_asyncio, uvloop.Loop)
    assert event_loop.describe(on_asyncio) == "asyncio"
    monkeypatch.setitem(sys.modules, "uvloop", uvloop)

    async def serve(*_: object) -> int:
        loops.append(asyncio.get_running_loop())
        return 0

    monkeypatch.setattr(broker_worker, "serve", serve)
    assert broker_worker.run_worker(cast(broker_worker.WorkerConfig, None), print) == 0
    assert isinstance(loops[2], uvloop.Loop)  # `easel worker`'s entry point
