"""The web UI prompt language, pure Python (never imports torch): see ``plan`` for the flow."""

from inference.prompts.attention import parse_attention
from inference.prompts.composition import SubPrompt, split_subprompts
from inference.prompts.errors import (
    InlineFlagError,
    NestingError,
    PromptError,
    UnknownWildcardError,
    WildcardRecursionError,
)
from inference.prompts.extra_networks import ExtraNetwork, extract_extra_networks, find_embeddings
from inference.prompts.flags import (
    KNOWN_FLAGS,
    InlineFlags,
    parse_aspect_ratio,
    parse_inline_flags,
    picture_seeds,
    resolve_flags,
    resolve_size,
)
from inference.prompts.plan import PromptPlan, ScheduledText, SubPromptPlan, build_plan, explain
from inference.prompts.schedule import Rendering, ScheduleSegment, renderings, schedule_prompt
from inference.prompts.tokenizer import Chunk, ClipTokenizer, chunk_tokens, default_tokenizer
from inference.prompts.wildcards import (
    NOT_PLANNED,
    WILDCARD_DRAWS_OPTION,
    DrawnValue,
    Expansion,
    PlannedDraws,
    RecordedDraws,
    WildcardLibrary,
    expand_prompt,
)

__all__ = [
    "KNOWN_FLAGS",
    "NOT_PLANNED",
    "WILDCARD_DRAWS_OPTION",
    "Chunk",
    "ClipTokenizer",
    "DrawnValue",
    "Expansion",
    "ExtraNetwork",
    "InlineFlagError",
    "InlineFlags",
    "NestingError",
    "PlannedDraws",
    "PromptError",
    "PromptPlan",
    "RecordedDraws",
    "Rendering",
    "ScheduleSegment",
    "ScheduledText",
    "SubPrompt",
    "SubPromptPlan",
    "UnknownWildcardError",
    "WildcardLibrary",
    "WildcardRecursionError",
    "build_plan",
    "chunk_tokens",
    "default_tokenizer",
    "expand_prompt",
    "explain",
    "extract_extra_networks",
    "find_embeddings",
    "parse_aspect_ratio",
    "parse_attention",
    "parse_inline_flags",
    "picture_seeds",
    "renderings",
    "resolve_flags",
    "resolve_size",
    "schedule_prompt",
    "split_subprompts",
]
