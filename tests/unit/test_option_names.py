"""Every option name the code writes or reads is one ``OPTION_NAMES`` holds: a worker of this
version refuses a job whose options hold another (``bot.jobs.broker.wire``), so one missing
there would have every job using it refused. Found in the source, by how options are used:
``<...>options[NAME]``, ``<...>options.get(NAME)`` (``pop``, ``setdefault``), ``NAME in
<...>options``, and the keys of a dict given as ``options=`` or assigned to ``options``; and,
followed through each function, what flows into them: a dict merged with them
(``{**request.options, NAME: v}``, ``**hires``, ``options | {NAME: v}``, ``options |= ...``,
``options.update(...)``), one copied from them (``dict(options)``, ``dict(options, NAME=v)``),
one given as ``{"options": ...}`` or returned by a function merged in
(``**_refiner_options(args)``), and the keywords of a call to a function whose ``**``
keywords become options (``with_options(request, NAME=v)``)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

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


@functools.cache  # the trees are never changed; the search asks of each node many times
def _unparsed(node: ast.expr) -> str:
    return ast.unparse(node)


def _is_options(node: ast.expr, names: Set[str]) -> bool:
    """Whether ``node`` holds a request's options: ``<...>options``, or a name found to."""
    return _unparsed(node).endswith("options") or (isinstance(node, ast.Name) and node.id in names)


def _callee(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)


def _from_options(node: ast.expr, names: Set[str]) -> bool:
    """Whether ``node`` is options, or a dict made from them: ``dict(options, K=v)``,
    ``options | {K: v}`` (either side)."""
    if isinstance(node, ast.Call) and _callee(node) == "dict" and node.args:
        return _from_options(node.args[0], names)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _from_options(node.left, names) or _from_options(node.right, names)
    return _is_options(node, names)


def _updates_options(node: ast.AST, names: Set[str]) -> TypeGuard[ast.Call]:
    """Whether ``node`` is ``options.update(...)``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "update"
        and _is_options(node.func.value, names)
    )


@dataclass
class _Flow:
    """The functions across the source whose options flow through calls: a forwarder's
    ``**`` keywords become options (``with_options``; its own parameters' names, left out),
    and a maker's returned dict is merged into them (``**_refiner_options(args)``)."""

    functions: Set[str]  # the source's module-level functions: a maker is one of them
    forwarders: dict[str, set[str]] = field(default_factory=dict)
    makers: set[str] = field(default_factory=set)


@functools.cache  # walked at every round of the search: once is enough, the trees stay
def _in_scope(scope: ast.AST) -> tuple[ast.AST, ...]:
    """The nodes of a function (its closures' included), or of a module outside its
    functions and classes."""
    if not isinstance(scope, ast.Module):
        return tuple(ast.walk(scope))
    return tuple(
        node
        for statement in scope.body
        if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for node in ast.walk(statement)
    )


def _held(node: ast.AST, names: Set[str], flow: _Flow) -> Iterator[ast.expr]:
    """The expressions ``node`` shows to hold options, or a part merged into them."""
    if isinstance(node, ast.keyword) and node.arg == "options":
        yield node.value
    elif isinstance(node, ast.Dict):
        spreads = [value for key, value in zip(node.keys, node.values, strict=True) if key is None]
        if any(_is_options(spread, names) for spread in spreads):  # {**request.options, K: v}
            yield node
        yield from (
            value
            for key, value in zip(node.keys, node.values, strict=True)
            if isinstance(key, ast.Constant) and key.value == "options"
        )
    elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(_is_options(target, names) for target in targets):
            yield node.value
        if _from_options(node.value, names):  # a copy: ``dict(request.options)``, ``| {...}``
            yield from (node.value, *targets)
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.BitOr):
        if _is_options(node.target, names):  # options |= {K: v}
            yield node.value
    elif _updates_options(node, names):  # options.update({K: v}, **more)
        yield from (*node.args, *(k.value for k in node.keywords if k.arg is None))
    elif isinstance(node, ast.BinOp | ast.Call) and _from_options(node, names):
        yield node  # dict(options, K=v), options | {K: v}: given on, not assigned
    elif isinstance(node, ast.Call) and _callee(node) in flow.forwarders:
        yield from (keyword.value for keyword in node.keywords if keyword.arg is None)


def _parts(held: ast.expr, flow: _Flow) -> Iterator[ast.expr]:
    """What makes up an expression that holds options: a dict's spreads, a comprehension's
    source, either branch of a choice; a maker's call is noted (``_Flow.makers``)."""
    if isinstance(held, ast.Dict):
        yield from (value for key, value in zip(held.keys, held.values, strict=True) if not key)
    elif isinstance(held, ast.DictComp):
        for generator in held.generators:  # {k: v for k, v in given.items()}
            if isinstance(generator.iter, ast.Call) and generator.iter.args == []:
                yield getattr(generator.iter.func, "value", generator.iter.func)
    elif isinstance(held, ast.IfExp):
        yield from (held.body, held.orelse)
    elif isinstance(held, ast.BoolOp):
        yield from held.values
    elif isinstance(held, ast.BinOp) and isinstance(held.op, ast.BitOr):
        yield from (held.left, held.right)
    elif isinstance(held, ast.Call) and isinstance(held.func, ast.Name):
        if held.func.id == "dict":
            yield from held.args
        elif held.func.id in flow.functions:
            flow.makers.add(held.func.id)


def _holding(scope: ast.AST, flow: _Flow) -> tuple[set[str], list[ast.expr]]:
    """The names in ``scope`` that hold options, and the expressions that do."""
    names: set[str] = set()
    while True:
        seen = len(names)
        found = [held for node in _in_scope(scope) for held in _held(node, names, flow)]
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef) and scope.name in flow.makers:
            found += [n.value for n in ast.walk(scope) if isinstance(n, ast.Return) and n.value]
        held: list[ast.expr] = []
        while found:
            expr = found.pop()
            held.append(expr)
            if isinstance(expr, ast.Name):
                names.add(expr.id)
            found.extend(_parts(expr, flow))
        if len(names) == seen:
            return names, held


def _keys(node: ast.AST, names: Set[str], flow: _Flow) -> Iterator[ast.expr | ast.keyword]:
    """The option names ``node`` reads or writes (an expression, or a forwarder's keyword)."""
    if isinstance(node, ast.Subscript) and _is_options(node.value, names):
        yield node.slice
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("get", "pop", "setdefault")
        and _is_options(node.func.value, names)
        and node.args
    ):
        yield node.args[0]
    elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        if _is_options(node.comparators[0], names):
            yield node.left
    elif _updates_options(node, names):  # options.update(K=v)
        yield from (k for k in node.keywords if k.arg is not None)
    elif isinstance(node, ast.Call) and (callee := _callee(node)) in flow.forwarders:
        own = flow.forwarders[callee]
        yield from (k for k in node.keywords if k.arg is not None and k.arg not in own)


def _scopes(tree: ast.Module) -> list[ast.AST]:
    return [
        tree,
        *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
    ]


def _flow(trees: Sequence[ast.Module]) -> _Flow:
    """The forwarders and makers of options across ``trees``, until no more are found."""
    functions = [
        n
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    flow = _Flow({n.name for tree in trees for n in tree.body if isinstance(n, ast.FunctionDef)})
    while True:
        known = (len(flow.forwarders), len(flow.makers))
        for tree in trees:
            for scope in _scopes(tree):
                _holding(scope, flow)
        for function in functions:
            kwargs = function.args.kwarg
            if kwargs is not None and kwargs.arg in _holding(function, flow)[0]:
                arguments = (
                    function.args.posonlyargs + function.args.args + function.args.kwonlyargs
                )
                flow.forwarders[function.name] = {a.arg for a in arguments}
        if (len(flow.forwarders), len(flow.makers)) == known:
            return flow


def _all_texts(trees: Mapping[str, ast.Module]) -> dict[str, dict[str, str]]:
    """Each module's names bound to a text, its own and those it imports by name (``from m
    import A as B``, in a function too), through re-exports (``inference.prompts``)."""
    texts = {module: _texts(tree) for module, tree in trees.items()}
    while True:
        known = sum(map(len, texts.values()))
        for module, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module in texts:
                    imported = texts[node.module]
                    for alias in node.names:
                        if alias.name in imported:
                            texts[module][alias.asname or alias.name] = imported[alias.name]
        if sum(map(len, texts.values())) == known:
            return texts


def _modules(tree: ast.Module, texts: Mapping[str, dict[str, str]]) -> dict[str, str]:
    """The source's modules ``tree`` imports whole, by the name it uses
    (``from inference import images``)."""
    named = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in texts:
                    named[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            named.update({a.asname: a.name for a in node.names if a.asname and a.name in texts})
    return named


def _text(
    key: ast.expr | ast.keyword,
    named: Mapping[str, str],
    modules: Mapping[str, str],
    texts: Mapping[str, dict[str, str]],
) -> str | None:
    """The option name ``key`` is, read in a module whose texts are ``named``; None: one made
    as the code runs (a loop's), left to the built requests' test below."""
    if isinstance(key, ast.keyword):
        return key.arg
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value
    if isinstance(key, ast.Name):
        return named.get(key.id)
    if isinstance(key, ast.Attribute):  # images.MASK_BLUR
        owner = modules.get(key.value.id) if isinstance(key.value, ast.Name) else None
        return texts[owner].get(key.attr) if owner else named.get(key.attr)
    return None


def _written(held: ast.expr) -> Iterator[ast.expr | ast.keyword]:
    """The keys written by an expression that holds options: a dict's, ``dict(..., K=v)``'s."""
    if isinstance(held, ast.Dict):
        yield from (key for key in held.keys if key)
    elif isinstance(held, ast.Call) and _callee(held) == "dict":
        yield from (keyword for keyword in held.keywords if keyword.arg is not None)


def used_option_names(trees: Mapping[str, ast.Module] | None = None) -> dict[str, str]:
    """Each option name the source (``trees``, by module; None: bot, cogs and inference)
    writes or reads, and one place it does."""
    if trees is None:
        trees = {_module(path): ast.parse(path.read_text(), str(path)) for path in SOURCES}
    texts = _all_texts(trees)
    flow = _flow(list(trees.values()))
    used: dict[str, str] = {}
    for module, tree in trees.items():
        modules = _modules(tree, texts)
        for scope in _scopes(tree):
            names, held = _holding(scope, flow)
            keys = [key for node in _in_scope(scope) for key in _keys(node, names, flow)]
            keys += [key for expr in held for key in _written(expr)]
            for key in keys:
                if (name := _text(key, texts[module], modules, texts)) is not None:
                    used.setdefault(name, f"{module.replace('.', '/')}.py:{key.lineno}")
    return used


def test_every_option_the_code_uses_is_named() -> None:
    used = used_option_names()
    assert len(used) >= 30  # the search finds them: it would pass empty
    assert {name: where for name, where in used.items() if name not in OPTION_NAMES} == {}


# Each way a dict's keys join a request's options (``scratch``, then used as options).
MERGES = {
    "update with keywords": "options = dict(request.options)\noptions.update(scratch=1)",
    "update with a dict": "request.options.update({'scratch': 1})",
    "update with a spread": "more = {'scratch': 1}\nrequest.options.update(**more)",
    "or in place": "options = dict(request.options)\noptions |= {'scratch': 1}",
    "dict with keywords": "merged = dict(request.options, scratch=1)\nrender(merged)",
    "or": "merged = request.options | {'scratch': 1}\nrender(merged)",
    "or given on": "render(replace(request, options={**base} | request.options | {'scratch': 1}))",
}


def test_the_search_reads_every_way_keys_join_the_options() -> None:
    for way, body in MERGES.items():
        function = "def made(request, base):\n" + "".join(
            f"    {line}\n" for line in body.split("\n")
        )
        assert "scratch" in used_option_names({"made": ast.parse(function)}), way


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
