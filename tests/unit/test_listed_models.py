"""Services.listed_installed: a model listed installed, in a models folder unchanged since,
is taken without walking the folders (the event loop asks it before an acknowledgement)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.services import Services
from bot.settings import load_settings
from db.database import connect


async def test_a_listed_model_is_taken_without_a_walk_until_the_folder_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "model_index.json").write_text("{}")
    settings = load_settings(env_file=None).model_copy(
        update={"models_dir": models, "data_dir": tmp_path / "data"}
    )
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        services = Services.build(conn, settings)
        assert not services.listed_installed("tiny")  # never listed: list them
        walks = []
        listing = services.registry.names
        monkeypatch.setattr(services.registry, "names", lambda: walks.append(1) or listing())
        assert services.list_models() == {"tiny"} and len(walks) == 1
        assert services.listed_installed("tiny") and len(walks) == 1  # no second walk
        assert not services.listed_installed("other")
        (models / "other").mkdir()  # a model installed (or removed): the folder's time moves
        (models / "other" / "model_index.json").write_text("{}")
        assert not services.listed_installed("tiny")
        assert services.list_models() == {"tiny", "other"} and len(walks) == 2
    finally:
        await conn.close()


async def test_a_model_removed_from_a_checkpoint_subfolder_is_listed_again(
    tmp_path: Path,
) -> None:
    """Removing ``Stable-diffusion/sdxl/m`` changes only that subfolder's time: the name is
    no longer taken as listed, and the new listing leaves it out."""
    models = tmp_path / "models"
    model = models / "Stable-diffusion" / "sdxl" / "m"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    settings = load_settings(env_file=None).model_copy(
        update={"models_dir": models, "data_dir": tmp_path / "data"}
    )
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        services = Services.build(conn, settings)
        assert services.list_models() == {"m"}
        assert services.listed_installed("m")
        (model / "model_index.json").unlink()
        model.rmdir()
        assert not services.listed_installed("m")
        assert services.list_models() == frozenset()
    finally:
        await conn.close()
