"""Training chat templates: the student's chat template with `{% generation %}` markers around assistant turns.

TRL's `SFTTrainer(assistant_only_loss=True)` trains only the tokens `apply_chat_template(...,
return_assistant_tokens_mask=True)` marks, i.e. what the template wraps in `{% generation %}`. Stock templates
have no such markers, so the student's tokenizer gets a training template (same text at inference, markers added):

1. TRL's own (`trl/chat_templates/*_training.jinja`, read from the installed TRL): the family is found by TRL's
   `get_training_chat_template`, which compares the tokenizer's stock template byte for byte with the originals
   TRL stores (Qwen2.5, Llama 3, Gemma 3, Phi-3, Qwen3, ...). A template that already has markers is kept.
2. agentkd's `templates/chatml_training.jinja` for ChatML tokenizers TRL has no template for (SmolLM2): chosen
   when it renders byte-identical to the stock template on probe conversations (with and without a system
   prompt, several turns, with and without the generation prompt); the stock template's default system prompt,
   if it inserts one, is read off a probe render and baked in.
3. Otherwise a `MaskError` asks for `--template FILE`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkd.core.errors import EXIT_CONFIG, AgentkdError

TEMPLATES_DIR = Path(__file__).parent / "templates"
CHATML_FILE = TEMPLATES_DIR / "chatml_training.jinja"
GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")

# conversations on which agentkd's ChatML template must render exactly like the stock template
_PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}],
    [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "Task: x"},
     {"role": "assistant", "content": "Thought: look.\n```py\nprint(1)\n```<end_code>"},
     {"role": "user", "content": "Observation:\n1"}, {"role": "assistant", "content": "final_answer(1)"}],
    [{"role": "user", "content": "a\n\nb "}, {"role": "assistant", "content": " c"}, {"role": "user", "content": "d"}],
]
_DEFAULT_SYSTEM_RE = re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\nWhat is 2\+2\?", re.S)


class MaskError(AgentkdError):
    """The loss mask would be wrong (or cannot be built): one line naming the dataset/example or the model."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class TrainingTemplate:
    """A chat template with generation markers and where it came from (e.g. `trl:qwen2_5_training.jinja`)."""

    text: str
    source: str


def has_generation_markers(template: str | dict | None) -> bool:
    if isinstance(template, dict):
        template = template.get("default")
    return bool(template) and GENERATION_RE.search(template) is not None


def trl_templates_dir() -> Path:
    """`chat_templates/` of the installed TRL (its training templates are read from there, never copied)."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise MaskError("TRL is not installed; pip install 'agentkd[train]'")
    return Path(next(iter(spec.submodule_search_locations))) / "chat_templates"


def stock_template(tokenizer) -> str | None:
    tmpl = tokenizer.chat_template
    return tmpl.get("default") if isinstance(tmpl, dict) else tmpl


def _render(tokenizer, template: str, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def chatml_template(default_system: str | None = None) -> str:
    """agentkd's ChatML training template, with the stock template's default system prompt (None: none)."""
    text = CHATML_FILE.read_text(encoding="utf-8")
    if default_system is None:
        return text
    return "{%- set default_system = " + json.dumps(default_system) + " %}\n" + text


def chatml_for(tokenizer) -> str | None:
    """agentkd's ChatML template if it renders exactly like the tokenizer's stock template on the probes."""
    stock = stock_template(tokenizer)
    if not stock:
        return None
    try:
        first = _render(tokenizer, stock, _PROBES[0], False)
        m = _DEFAULT_SYSTEM_RE.match(first)
        candidate = chatml_template(m.group(1) if m else None)
        for probe in _PROBES:
            for agp in (False, True):
                if _render(tokenizer, stock, probe, agp) != _render(tokenizer, candidate, probe, agp):
                    return None
    except Exception:  # a stock template that cannot render the probes is not plain ChatML
        return None
    return candidate


def trl_training_template(tokenizer) -> TrainingTemplate | None:
    """TRL's training template for the tokenizer's family (TRL's identity match), or None if TRL has none."""
    from trl.chat_template_utils import get_training_chat_template

    stock = stock_template(tokenizer)
    if not stock:
        return None
    try:
        text = get_training_chat_template(tokenizer)
    except (ValueError, TypeError):
        return None
    if text is None:  # already training-ready (has generation markers)
        return TrainingTemplate(stock, "tokenizer (already has generation markers)")
    name = next((f.name for f in sorted(trl_templates_dir().glob("*_training.jinja"))
                 if f.read_text(encoding="utf-8") == text), "training template")
    return TrainingTemplate(text, f"trl:{name}")


def auto_training_template(tokenizer, *, model: str = "the model") -> TrainingTemplate:
    """TRL's template for the family, else agentkd's ChatML one, else a MaskError naming the model."""
    found = trl_training_template(tokenizer)
    if found is not None:
        return found
    chatml = chatml_for(tokenizer)
    if chatml is not None:
        return TrainingTemplate(chatml, f"agentkd:{CHATML_FILE.name}")
    raise MaskError(f"{model}: no training chat template for this tokenizer (TRL has none for its chat template and "
                    f"it is not ChatML); pass --template FILE, a copy of its template with the assistant turns wrapped "
                    "in {% generation %}...{% endgeneration %}")


def resolve_template(tokenizer, template: str | None = None, *, model: str = "the model") -> TrainingTemplate:
    """The template to train with. `template`: None (auto, see the module doc), `stock` (the tokenizer's own),
    `chatml` (agentkd's), a TRL name (`qwen2_5`, `llama3`, ... → TRL's `<name>_training.jinja`), a .jinja path,
    or template text. The result may lack generation markers; `check_markers` says so."""
    if template is None:
        return auto_training_template(tokenizer, model=model)
    if template == "stock":
        return TrainingTemplate(stock_template(tokenizer) or "", "tokenizer's stock template")
    if template == "chatml":
        m = _DEFAULT_SYSTEM_RE.match(_render(tokenizer, stock_template(tokenizer), _PROBES[0], False)) \
            if stock_template(tokenizer) else None
        return TrainingTemplate(chatml_template(m.group(1) if m else None), f"agentkd:{CHATML_FILE.name}")
    if "{{" in template or "{%" in template:
        return TrainingTemplate(template, "given template text")
    path = Path(template).expanduser()
    if path.is_file():
        return TrainingTemplate(path.read_text(encoding="utf-8"), str(path))
    trl_dir = trl_templates_dir()
    name = template.removesuffix(".jinja").removesuffix("_training")
    if (trl_dir / f"{name}_training.jinja").is_file():
        return TrainingTemplate((trl_dir / f"{name}_training.jinja").read_text(encoding="utf-8"),
                                f"trl:{name}_training.jinja")
    known = sorted(f.name.removesuffix("_training.jinja") for f in trl_dir.glob("*_training.jinja"))
    raise MaskError(f"template {template!r}: not a file, `stock`, `chatml` or a TRL training template "
                    f"({', '.join(known)})")


def check_markers(choice: TrainingTemplate, tokenizer, *, model: str) -> None:
    """MaskError unless the template has `{% generation %}` markers, naming the model and the template to use."""
    if has_generation_markers(choice.text):
        return
    try:
        hint = f"use {auto_training_template(tokenizer, model=model).source} (omit --template)"
    except MaskError:
        hint = "pass --template FILE with the assistant turns wrapped in {% generation %}...{% endgeneration %}"
    raise MaskError(f"{model}: the chat template ({choice.source}) has no {{% generation %}} markers, so "
                    f"assistant_only_loss would train no token; {hint}")


def load_student_tokenizer(model: str, template: str | None = None, **kwargs: Any):
    """The fast tokenizer for a model spec (`embedded:smollm2-135m`, `local:PATH`, an HF folder) with its training
    template set as `chat_template` (so TRL uses it as is). MaskError if the template has no generation markers."""
    from transformers import AutoTokenizer

    from agentkd.models.load import local_path_for

    path = local_path_for(model, progress=False)
    if path is None and Path(model).expanduser().is_dir():
        path = Path(model).expanduser()
    if path is None or not path.exists():
        raise MaskError(f"{model}: not a local model (use embedded:NAME, local:PATH or an HF folder)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise MaskError(f"{model}: the tokenizer is not a fast (Rust) tokenizer; assistant masks need its offsets")
    choice = resolve_template(tokenizer, template, model=model)
    check_markers(choice, tokenizer, model=model)
    tokenizer.chat_template = choice.text
    tokenizer.agentkd_template_source = choice.source
    return tokenizer


def template_source(tokenizer) -> str:
    """Where the tokenizer's training template came from (set by `load_student_tokenizer`)."""
    return getattr(tokenizer, "agentkd_template_source", "tokenizer")


def training_template(tokenizer) -> str:
    """The training chat template (with generation markers) for this tokenizer's family; MaskError if none."""
    return auto_training_template(tokenizer).text
