"""Every option name the code writes or reads is one ``OPTION_NAMES`` holds: a worker of this
version refuses a job whose options hold another (``bot.jobs.broker.wire``), so one missing
there would have every job using it refused. Found in the source, by how options are used:
``<...>options[NAME]``, ``<...>options.get(NAME)`` (``pop``, ``setdefault``), ``NAME in
<...>options``, and the keys of a dict given as ``options=`` or assigned to ``options``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from bot.compare import Axis, parse_axis, plan_comparison
from bot.edits import (
    InpaintSettings,
    Picture,
    expand_request,
    fix_faces_request,
    inpaint_request,
    upscale_request,
    vary_request,
)
from bot.infotext_import import Installed, request_from_infotext_text
from bot.jobs.broker.wire import JobMessage, with_picture_paths
from bot.policy.addons import AddonKind, AddonRules, under_addon_rules
from bot.policy.prompt_safety import plan_request
from bot.requests import ImagineOptions, build_request
from cogs.imagine import with_hires_fix, with_options
from inference import face_options, images, outpaint
from inference.compare import COMPARE_OPTION
from inference.option_names import OPTION_NAMES
from inference.types import RenderRequest

ROOT = Path(__file__).parents[2]
SOURCES = [
    path for folder in ("bot", "cogs", "inference") for path in (ROOT / folder).rglob("*.py")
]


def _texts(tree: ast.Module) -> dict[str, str]:
    """The module's names bound to a text (``A = "a"``, ``A, B = "a", 4``)."""
    named: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (
                zip(target.elts, node.value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                else [(target, node.value)]
            )
            for name, value in pairs:
                if (
                    isinstance(name, ast.Name)
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    named[name.id] = value.value
    return named


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _with_imported(
    tree: ast.Module, own: dict[str, str], texts: dict[str, dict[str, str]]
) -> dict[str, str]:
    """``own``, with the texts the module imports by name (``from m import A as B``)."""
    named = dict(own)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in texts:
            for alias in node.names:
                if alias.name in texts[node.module]:
                    named[alias.asname or alias.name] = texts[node.module][alias.name]
    return named


def _is_options(node: ast.expr) -> bool:
    return ast.unparse(node).endswith("options")


def _named_keys(node: ast.AST) -> Iterator[ast.expr | None]:
    if isinstance(node, ast.Subscript) and _is_options(node.value):
        yield node.slice
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("get", "pop", "setdefault")
        and _is_options(node.func.value)
        and node.args
    ):
        yield node.args[0]
    elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        if _is_options(node.comparators[0]):
            yield node.left
    elif (
        isinstance(node, ast.keyword) and node.arg == "options" and isinstance(node.value, ast.Dict)
    ) or (
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Dict)
        and any(isinstance(target, ast.Name) and _is_options(target) for target in node.targets)
    ):
        yield from node.value.keys


def used_option_names() -> dict[str, str]:
    """Each option name the source uses, and one place it does."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in SOURCES}
    own = {_module(path): _texts(tree) for path, tree in trees.items()}
    used: dict[str, str] = {}
    for path, tree in trees.items():
        texts = _with_imported(tree, own[_module(path)], own)
        for node in ast.walk(tree):
            for key in _named_keys(node):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    name: str | None = key.value
                elif isinstance(key, ast.Name | ast.Attribute):
                    name = texts.get(key.id if isinstance(key, ast.Name) else key.attr)
                else:
                    name = None
                if name is not None:
                    used.setdefault(name, f"{path.relative_to(ROOT)}:{key.lineno}")
    return used


def test_every_option_the_code_uses_is_named() -> None:
    used = used_option_names()
    assert len(used) >= 30  # the search finds them: it would pass empty
    assert {name: where for name, where in used.items() if name not in OPTION_NAMES} == {}


# Pasted web UI settings (a refiner and the hires fix do not combine: two of them).
INFOTEXT = """a cat
Negative prompt: dog
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Clip skip: 2, \
Pad conds: True, Tiling: True, VAE: myvae.safetensors"""
HIRES_AND_FACES = """, Hires upscale: 2, Hires steps: 10, Hires upscaler: Lanczos, \
Denoising strength: 0.4, ADetailer model: face_yolov8n.pt, ADetailer prompt: a face, \
ADetailer denoising strength: 0.3, ADetailer confidence: 0.4, Face restoration: CodeFormer"""
REFINER = ", Refiner: r, Refiner switch at: 0.8"


def built_requests(tmp_path: Path) -> dict[str, tuple[RenderRequest, set[str]]]:
    """A request from each of the real builders, and option names each must hold (so that
    the builder was reached, not refused or left at its defaults)."""
    Image.new("RGB", (512, 512)).save(tmp_path / "picture.png")
    Image.new("L", (512, 512), 255).save(tmp_path / "mask.png")
    picture = Picture(tmp_path / "picture.png", 512, 512)
    mask = Picture(tmp_path / "mask.png", 512, 512)
    every_flag = "a cat --chaos 30 --tile --stop 50 --relax --faces --restore-faces --ar 16:9"
    flags = build_request(
        ImagineOptions(prompt=f"{every_flag} --no dogs --steps 12 --cfg 5 --seed 3", clip_skip=2)
    )
    installed = Installed(
        models=["m", "r"],
        model_hash=lambda _name: None,
        loras=[],
        vaes=["myvae"],
        upscalers=["Lanczos"],
    )
    face = {face_options.FIX_FACES, face_options.FACE_RESTORE}
    return {
        "flags": (flags, {"chaos", "tile", "stop", "relax", "aspect", "clip_skip"} | face),
        "hires": (with_hires_fix(flags, "Lanczos"), {"hires_scale", "hires_upscaler"}),
        "refiner": (
            with_options(
                build_request(ImagineOptions(prompt="a dog")), refiner="r", refiner_switch=0.8
            ),
            {"refiner", "refiner_switch"},
        ),
        "infotext, hires, faces": (
            request_from_infotext_text(INFOTEXT + HIRES_AND_FACES, installed).request,
            {"vae", "pad_conds", "hires_steps", face_options.FIX_FACES_STRENGTH},
        ),
        "infotext, refiner": (
            request_from_infotext_text(INFOTEXT + REFINER, installed).request,
            {"refiner", "refiner_switch"},
        ),
        "compare": (
            plan_comparison(
                flags, parse_axis(Axis.STEPS, "10, 20", "a cat", 150, ["m"]), None
            ).request,
            {COMPARE_OPTION},
        ),
        "vary": (vary_request(flags, picture, "subtle"), set()),
        "inpaint": (
            inpaint_request(flags, picture, mask, InpaintSettings()),
            {images.MASK_BLUR, images.MASKED_CONTENT},
        ),
        "upscale fast": (upscale_request(flags, picture, 2), {"upscale_factor"}),
        "upscale creative": (
            upscale_request(flags, picture, 2, "creative", upscaler="Lanczos"),
            {"upscale_mode", "upscaler"},
        ),
        "faces": (fix_faces_request(flags, picture, restore=True), face),
        "zoom": (expand_request(flags, picture, zoom_out=1.5), {outpaint.ZOOM_OUT}),
        "pan": (expand_request(flags, picture, pan="left"), {outpaint.OUTPAINT}),
    }


def test_every_built_request_reaches_a_worker_with_options_it_knows(tmp_path: Path) -> None:
    """Whatever way a builder writes its options (a helper, ``**kwargs``, a dict literal the
    search above does not read), the job a bot of this version publishes, admitted under a
    server's add-on lists, is one a worker of this version renders."""
    rules = AddonRules(
        {
            AddonKind.CONTROLNET: frozenset({"cn"}),
            AddonKind.UPSCALER: frozenset({"Lanczos"}),
            AddonKind.LORA: frozenset({"l"}),
            AddonKind.VAE: frozenset({"myvae"}),
        },
        default_upscaler="Lanczos",
        hires_upscaler="Lanczos",
    )
    for name, (built, expected) in built_requests(tmp_path).items():
        admitted = plan_request(under_addon_rules(built, rules), [], None, rules, ["emb"])
        assert expected <= admitted.options.keys(), name
        sent = JobMessage("job", with_picture_paths(admitted, {}), secret="s").encode()
        assert JobMessage.decode(sent).too_new() is None, (name, sorted(admitted.options))
