import logging
import os
import unicodedata
from ipaddress import ip_network
from pathlib import Path

import pytest

from bot import settings as settings_module
from bot.settings import Settings, SettingsError, load_settings

SETTING_NAMES = [
    "DISCORD_TOKEN",
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "EASEL_DEV_GUILD_ID",
    "EASEL_DATA_DIR",
    "EASEL_MODELS_DIR",
    "EASEL_WILDCARDS_DIR",
    "EASEL_DEFAULT_MODEL",
    "EASEL_DEVICES",
    "EASEL_QUEUE_URL",
    "EASEL_REMOTE_SLOTS",
    # Beyond the contract's list: what the engine offers an admin.
    "EASEL_DEFAULT_UPSCALER",
    "EASEL_ALLOW_PICKLE",
    "EASEL_CPU_OFFLOAD",
    "EASEL_COMPILE",
    "EASEL_COMPILE_MODE",
    "EASEL_CUDA_GRAPHS",
    "EASEL_MAX_PIXELS",
    "EASEL_MAX_STEPS",
    "EASEL_MODEL_CACHE_GB",
    "EASEL_HIRES_UPSCALER",
    "EASEL_WEB_TRUSTED_PROXIES",
    "EASEL_PRIORITY_SERVERS",
    "EASEL_ALLOWED_SERVERS",
    "EASEL_FAIRNESS",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_contract() -> None:
    settings = load_settings(None)
    assert settings.discord_token == ""
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.data_dir == Path("data")
    assert settings.models_dir == Path("models")
    assert settings.wildcards_dir == Path("wildcards")
    assert settings.devices == ()
    assert settings.queue_url == ""
    assert settings.dev_guild_id is None


def test_every_contract_name_is_a_setting_and_documented() -> None:
    aliases = {field.validation_alias for field in Settings.model_fields.values()}
    assert set(SETTING_NAMES) <= aliases
    example = (Path(__file__).parents[2] / ".env.example").read_text()
    for name in SETTING_NAMES:
        # Commented out where the Docker image sets it (tests/unit/test_deployment.py).
        documented = f"\n{name}=" in example or f"\n# {name}=" in example
        assert documented, f"{name} missing from .env.example"


def test_env_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=abc\nEASEL_DEVICES=cuda:0, cuda:1\nEASEL_DEV_GUILD_ID=42\n")
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "d"))
    settings = load_settings(env_file)
    assert settings.discord_token == "abc"
    assert settings.devices == ("cuda:0", "cuda:1")
    assert settings.dev_guild_id == 42
    assert settings.database_path == tmp_path / "d" / "easel.sqlite3"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EASEL_DEVICES", "gpu0", "EASEL_DEVICES='gpu0' is invalid"),
        ("EASEL_DEV_GUILD_ID", "12ab", "is invalid: must be a server id, its digits only (in"),
        ("EASEL_QUEUE_URL", "redis://x", "must be empty (in-process queue) or a nats:// or tls://"),
        ("EASEL_WEB_ADDR", ":8080", "must be host:port, e.g. 0.0.0.0:8080 or 127.0.0.1:8080"),
        ("EASEL_WARM_START", "maybe", "must be auto, on (or 1, true, yes) or off (or 0, false"),
        ("DISCORD_API_BASE", "discord.com", "http(s) URL"),
        ("DISCORD_GATEWAY_URL", "https://x", "ws(s) URL"),
        # Both bounds, whichever is crossed (pydantic names the one crossed only).
        (
            "EASEL_MAX_STEPS",
            "500",
            "EASEL_MAX_STEPS='500' is invalid: must be a whole number between 1 and 150",
        ),
        (
            "EASEL_MAX_PIXELS",
            "100",
            "EASEL_MAX_PIXELS='100' is invalid: must be a whole number between 4096 and 4194304",
        ),
        ("EASEL_MAX_STEPS", "many", "must be a whole number between 1 and 150"),
        ("EASEL_MODEL_CACHE_GB", "-1", "must be a number between 0 and 4096"),
        (
            "EASEL_ALLOW_PICKLE",
            "maybe",
            "EASEL_ALLOW_PICKLE='maybe' is invalid: must be 1 or 0 (or true or false, yes or no, "
            "on or off)",
        ),
        (
            "EASEL_WEB_TRUSTED_PROXIES",
            "172.18.0.1, 10.0.0.0/33",
            "EASEL_WEB_TRUSTED_PROXIES='172.18.0.1, 10.0.0.0/33' is invalid: '10.0.0.0/33' is "
            "not an IP address or network",
        ),
        ("EASEL_WEB_TRUSTED_PROXIES", "proxy", "'proxy' is not an IP address or network"),
        (
            "EASEL_FAIRNESS",
            "guilds",
            "EASEL_FAIRNESS='guilds' is invalid: must be members (each member a fair share, "
            "whatever their server) or servers (servers take turns first, then members within "
            "each)",
        ),
        (
            "EASEL_PRIORITY_SERVERS",
            "42, home",
            "EASEL_PRIORITY_SERVERS='42, home' is invalid: 'home' is not a server id; use server "
            "ids, digits only",
        ),
        ("EASEL_ALLOWED_SERVERS", "42;43", "EASEL_ALLOWED_SERVERS='42;43' is invalid: '42;43'"),
        # Unicode digits (superscript, Arabic-Indic) are not an id's digits.
        ("EASEL_PRIORITY_SERVERS", "4²", "EASEL_PRIORITY_SERVERS='4²' is invalid: '4²' is not a"),
        ("EASEL_ALLOWED_SERVERS", "٤٢", "EASEL_ALLOWED_SERVERS='٤٢' is invalid: '٤٢' is not a"),
        ("EASEL_DEV_GUILD_ID", "٤٢", "EASEL_DEV_GUILD_ID='٤٢' is invalid: must be a server id"),
        (
            "EASEL_DEFAULT_UPSCALER",
            "latent (Bicubic)",
            "EASEL_DEFAULT_UPSCALER='latent (Bicubic)' is invalid: a latent upscaler enlarges "
            "only /imagine's hires fix (set it as EASEL_HIRES_UPSCALER); give Lanczos or an "
            "installed model upscaler's name, or leave it empty for the first model upscaler",
        ),
        (
            "EASEL_WEB_TRUSTED_PROXIES",
            "::ffff:172.18.0.1",
            "'::ffff:172.18.0.1' is an IPv4-mapped IPv6 address; write it as IPv4 (172.18.0.1)",
        ),
    ],
)
def test_bad_setting_names_itself(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_settings(None)


def test_fairness_is_between_members_unless_servers_take_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(None).fairness == "members"
    monkeypatch.setenv("EASEL_FAIRNESS", " Servers ")
    assert load_settings(None).fairness == "servers"


def test_priority_servers_are_server_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).priority_servers == frozenset()
    monkeypatch.setenv("EASEL_PRIORITY_SERVERS", " 42,,1234567890123456789 ")
    assert load_settings(None).priority_servers == {42, 1234567890123456789}


def test_a_default_model_pasted_in_nfd_is_read_as_the_registry_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """macOS lists ``modèle`` as ``e`` + U+0301; Easel names files in NFC (``as_typed``)."""
    monkeypatch.setenv("EASEL_DEFAULT_MODEL", unicodedata.normalize("NFD", "modèle"))
    monkeypatch.setenv("EASEL_DEFAULT_UPSCALER", unicodedata.normalize("NFD", "4x-Ésrgan"))
    settings = load_settings(None)
    assert settings.default_model == unicodedata.normalize("NFC", "modèle")
    assert settings.default_upscaler == unicodedata.normalize("NFC", "4x-Ésrgan")


def test_allowed_servers_empty_serve_every_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).serves_server(42)
    monkeypatch.setenv("EASEL_ALLOWED_SERVERS", " 42,,1234567890123456789 ")
    listed = load_settings(None)
    assert listed.allowed_servers == {42, 1234567890123456789}
    assert listed.serves_server(42) and not listed.serves_server(43)


def test_a_dev_server_left_off_the_allowed_servers_names_both_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its commands, registered there alone, would all be refused there."""
    monkeypatch.setenv("EASEL_ALLOWED_SERVERS", "42,43")
    monkeypatch.setenv("EASEL_DEV_GUILD_ID", "44")
    with pytest.raises(SettingsError) as refused:
        load_settings(None)
    assert str(refused.value).startswith(
        "EASEL_ALLOWED_SERVERS='42,43' is invalid: it leaves out EASEL_DEV_GUILD_ID=44"
    )
    monkeypatch.setenv("EASEL_DEV_GUILD_ID", "43")
    assert load_settings(None).dev_guild_id == 43
    monkeypatch.setenv("EASEL_ALLOWED_SERVERS", "")
    monkeypatch.setenv("EASEL_DEV_GUILD_ID", "44")  # no list: every server, its own too
    assert load_settings(None).dev_guild_id == 44


def test_trusted_proxies_are_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).web_trusted_proxies == ()  # only loopback is exempt by default
    monkeypatch.setenv("EASEL_WEB_TRUSTED_PROXIES", " 172.18.0.1, 10.0.0.0/8,,fd00::/8 ")
    assert load_settings(None).web_trusted_proxies == (
        ip_network("172.18.0.1/32"),
        ip_network("10.0.0.0/8"),
        ip_network("fd00::/8"),
    )


def test_engine_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.engines import engine_factory_for
    from inference.engine import Engine

    for name, value in {
        "EASEL_MAX_PIXELS": "65536",
        "EASEL_MAX_STEPS": "30",
        "EASEL_ALLOW_PICKLE": "1",
        "EASEL_DEFAULT_UPSCALER": "4x-UltraSharp",
        "EASEL_MODEL_CACHE_GB": "1.5",
    }.items():
        monkeypatch.setenv(name, value)
    engine = engine_factory_for(load_settings(None))("cpu")
    assert isinstance(engine, Engine)
    assert (engine.limits.max_pixels, engine.limits.max_steps) == (65536, 30)
    assert engine.registry.allow_pickle and engine.default_upscaler == "4x-UltraSharp"
    assert engine.tools.preview_interval_s == 2.0  # one preview per progress edit
    assert (engine.models.max_loaded_models, engine.models.memory_budget_bytes) == (8, 1536 * 2**20)
    monkeypatch.delenv("EASEL_MODEL_CACHE_GB")
    one_at_a_time = engine_factory_for(load_settings(None))("cpu")
    assert isinstance(one_at_a_time, Engine)
    cache = one_at_a_time.models
    assert (cache.max_loaded_models, cache.memory_budget_bytes) == (1, None)


@pytest.mark.parametrize(
    ("value", "compiles"),
    [
        ("1", True),
        ("0", False),
        ("on", True),
        (" OFF ", False),
        ("auto", False),
        ("true", True),
        ("False", False),
    ],
)
def test_compile_takes_the_contract_s_values(
    monkeypatch: pytest.MonkeyPatch, value: str, compiles: bool
) -> None:
    monkeypatch.setenv("EASEL_COMPILE", value)
    assert load_settings(None).compiles_models is compiles


def test_a_compile_value_out_of_range_lists_every_accepted_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EASEL_COMPILE", "2")
    with pytest.raises(SettingsError) as refused:
        load_settings(None)
    assert str(refused.value) == (
        "EASEL_COMPILE='2' is invalid: must be auto, on (or 1, true, yes) or off (or 0, false, no)"
    )


def test_missing_token_is_named() -> None:
    with pytest.raises(SettingsError, match="DISCORD_TOKEN is not set"):
        load_settings(None).require_token()


def test_a_misspelled_setting_is_warned_of_once_with_the_closest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in [name for name in os.environ if name.upper().startswith("EASEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(settings_module, "_UNKNOWN_TOLD", set())
    env_file = tmp_path / ".env"
    env_file.write_text("EASEL_RETENTION_DAY=7\nEASEL_MODELS_PATH=/srv/models\n")
    monkeypatch.setenv("EASEL_MAX_QUEUED_PER_MEMBERS", "1")
    # Names Easel's other files read (the tests, CI, the broker's and compose's config).
    for other in ("EASEL_HYPOTHESIS_PROFILE", "EASEL_CI_UPGRADES", "EASEL_NATS_WORKER_3_PASSWORD"):
        monkeypatch.setenv(other, "x")
    with caplog.at_level(logging.WARNING, logger="bot.settings"):
        settings = load_settings(env_file)
        assert caplog.records == []  # said once logging is installed, as the CLI does
        settings_module.warn_of_unknown_settings(env_file)
        settings_module.warn_of_unknown_settings(env_file)  # asked again: not said again
    assert settings.retention_days == 30  # ignored, and the start goes on
    assert [record.getMessage() for record in caplog.records] == [
        "EASEL_MAX_QUEUED_PER_MEMBERS (in the environment) is not a setting of Easel, so it is "
        "ignored: did you mean EASEL_MAX_QUEUED_PER_MEMBER?",
        f"EASEL_RETENTION_DAY (in {env_file}) is not a setting of Easel, so it is ignored: did "
        "you mean EASEL_RETENTION_DAYS?",
    ]


def test_every_on_off_setting_takes_the_same_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """EASEL_WARM_START and EASEL_COMPILE take 1/0, true/false and yes/no as the bool settings
    (EASEL_CUDA_GRAPHS) do, besides on, off and auto."""
    for on, off in (("1", "0"), ("true", "false"), ("yes", "no"), ("on", "off")):
        for word, expected in ((on, True), (off, False)):
            for name in ("EASEL_WARM_START", "EASEL_COMPILE", "EASEL_CUDA_GRAPHS"):
                monkeypatch.setenv(name, word)
            settings = load_settings(None)
            switches = (settings.warm_start, settings.compile, settings.cuda_graphs)
            assert switches == ("on" if expected else "off",) * 2 + (expected,)
