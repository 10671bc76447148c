"""Build-time parts of the docs site (``mkdocs.yml``: ``hooks``), so they cannot drift.

Markers in a page's Markdown (HTML comments, invisible if left alone) are replaced:

- ``<!-- step-fields -->`` on ``steps/<name>.md``: the step's config fields, types,
  defaults and constraints, read from the pydantic model the registry
  (``freightline/contracts/steps.py``, ``STEPS``) names for it;
- ``<!-- kargo-examples -->`` on a step page: the example configurations of Kargo's
  reference page for the step (``tests/reference/kargo-steps/<name>.md``), the very
  examples the conformance tests run;
- ``<!-- cli-reference -->``: every ``freightline`` command, its usage and options,
  read from the Typer app (``freightline/app/cli.py``);
- ``<!-- include: PATH -->``: a Markdown file of the repository outside ``docs/``
  (``deploy/README.md``, ``bench/README.md``), its links into ``docs/`` rewritten for
  the page that includes it.

``on_files`` refuses to build when a registry step has no page or its page lacks
the prose it must hold: a new step in the registry fails the build (and
``tests/test_docs_site.py``) with a message naming what to write.
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _read_this_checkout() -> None:
    """Import Freightline (and the step models, the CLI, the tests' page reader) from the
    checkout the site is built from, not from wherever the venv installed it. mkdocs puts
    back ``sys.path`` once this module is loaded, so ``on_config`` does this again."""
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))


_read_this_checkout()

from mkdocs.exceptions import PluginError  # noqa: E402
from pydantic import BaseModel, RootModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from freightline.contracts.steps import STEPS, StepDefinition, StepRunner  # noqa: E402

if typing.TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.livereload import LiveReloadServer
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

FIELDS_MARKER = "<!-- step-fields -->"
EXAMPLES_MARKER = "<!-- kargo-examples -->"
CLI_MARKER = "<!-- cli-reference -->"
_INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.MULTILINE)
KARGO_PAGES = REPO / "tests" / "reference" / "kargo-steps"

REQUIRED_SECTIONS = ("Configuration", "Outputs", "Examples")
"""The second-level headings every step page has."""


# ---------------------------------------------------------------- step pages


def step_page_problems(docs_dir: Path, steps: Mapping[str, StepDefinition] = STEPS) -> list[str]:
    """What the step pages lack: a missing page, section, marker or example, one line each."""
    problems: list[str] = []
    for name in steps:
        page = docs_dir / "steps" / f"{name}.md"
        if not page.exists():
            problems.append(
                f"docs/steps/{name}.md is missing: the step {name!r} is in the registry; write "
                "its page (and add it to the nav in mkdocs.yml): a title, what the step does, "
                f"then the sections {', '.join(f'## {s}' for s in REQUIRED_SECTIONS)} (the "
                f"field table is generated where the page says {FIELDS_MARKER})"
            )
            continue
        problems.extend(_page_problems(name, page.read_text()))
    return problems


def _page_problems(name: str, text: str) -> Iterator[str]:
    where = f"docs/steps/{name}.md"
    headings = re.findall(r"^## (.+?)\s*$", text, re.MULTILINE)
    missing = [s for s in REQUIRED_SECTIONS if s not in headings]
    if missing:
        yield f"{where}: no {', '.join(f'## {s}' for s in missing)} section"
    title = re.search(r"^# .+$", text, re.MULTILINE)
    if title is None:
        yield f"{where}: no title (# `{name}`)"
    elif not text[title.end() : text.find("\n## ")].strip():
        yield f"{where}: no prose under the title saying what the step does"
    if FIELDS_MARKER not in _section(text, "Configuration"):
        yield f"{where}: the Configuration section has no {FIELDS_MARKER} (the generated fields)"
    if not _section(text, "Outputs").strip():
        yield f"{where}: the Outputs section is empty (say 'None.' if the step has none)"
    examples = _section(text, "Examples")
    has_kargo_page = (KARGO_PAGES / f"{name}.md").exists()
    if has_kargo_page and EXAMPLES_MARKER not in examples:
        yield (
            f"{where}: the Examples section has no {EXAMPLES_MARKER}, though Kargo's page "
            f"tests/reference/kargo-steps/{name}.md has examples the tests run"
        )
    if not has_kargo_page and "```yaml" not in examples:
        yield f"{where}: the Examples section has no ```yaml example"


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\s*$(?P<body>.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group("body") if match else ""


def field_table(step: StepDefinition) -> str:
    """The Markdown table of a step's config fields, read from its pydantic model."""
    runs = _RUNS[step.runner] + (" (or inline in a worktree batch)" if step.inline else "")
    return f"Runs {runs}.\n\n{_fields(step)}"


_RUNS = {
    StepRunner.WORKTREE: "in the clone-to-push worktree activity, with the steps around it",
    StepRunner.ARGOCD: "in its own Argo CD activity (on the Stage's shard queue, if any)",
    StepRunner.WORKFLOW: "in the Promotion workflow itself, without an activity",
    StepRunner.PROJECT: "in its own activity that updates the project's workflows",
}


def _fields(step: StepDefinition) -> str:
    model = step.config_model()
    if model is None:
        return "The step takes no configuration."
    if issubclass(model, RootModel):
        root = model.model_fields["root"]
        return (
            f"The whole `config` is one value: {_type_name(root.annotation)}"
            f"{_constraints(root)}; any keys are allowed."
        )
    rows = list(_rows(model, ""))
    # A model's own descriptions (pydantic's ``description``) get a column once any field has one.
    described = any(row[5] for row in rows)
    head = ["field", "type", "required", "default", "constraints", *(["what"] if described else [])]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    for path, kind, required, default, constraints, what in rows:
        cells = [f"`{path}`", kind, required, default, constraints, *([what] if described else [])]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _rows(
    model: type[BaseModel], prefix: str, seen: frozenset[type] = frozenset()
) -> Iterator[tuple[str, str, str, str, str, str]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        yield (
            path,
            _cell(_type_name(field.annotation)),
            "yes" if field.is_required() else "",
            _default(field),
            _cell(_constraints(field).removeprefix("; ")),
            _cell(field.description or ""),
        )
        for suffix, nested in _nested_models(field.annotation):
            if nested not in seen:
                yield from _rows(nested, f"{path}{suffix}.", seen | {model})


def _nested_models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models a field holds, with the path suffix that reaches them (``[]``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not issubclass(annotation, RootModel):
            yield "", annotation
    elif origin is typing.Annotated:
        yield from _nested_models(args[0])
    elif origin in (list, tuple, set, frozenset) and args:
        for suffix, model in _nested_models(args[0]):
            yield f"[]{suffix}", model
    elif origin is dict and args:
        for suffix, model in _nested_models(args[1]):
            yield f".<key>{suffix}", model
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested_models(arg)


_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    timedelta: "duration",
}


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "any"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (list, tuple, set, frozenset):
        inner = _type_name(args[0]) if args else "any"
        return f"[]({inner})" if " \\| " in inner else f"[]{inner}"
    if origin is dict:
        return f"map[{_type_name(args[0])}]{_type_name(args[1])}" if args else "map"
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(dict.fromkeys(names))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f'`"{m.value}"`' for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, RootModel):
        return _type_name(annotation.model_fields["root"].annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return str(getattr(annotation, "__name__", annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value: Any = field.default
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:  # a factory of the validated data: no one default
            return "(computed)"
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_defaults=True)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if value in ([], {}, ()):
        return "empty"
    return _cell(f"`{json.dumps(value) if isinstance(value, list | dict) else value}`")


_CONSTRAINTS = {
    "min_length": "at least {} long",
    "max_length": "at most {} long",
    "ge": "≥ {}",
    "gt": "> {}",
    "le": "≤ {}",
    "lt": "< {}",
    "pattern": "matches `{}`",
}


def _constraints(field: FieldInfo) -> str:
    parts = [
        text.format(getattr(item, attribute))
        for item in field.metadata
        for attribute, text in _CONSTRAINTS.items()
        if getattr(item, attribute, None) is not None
    ]
    return f"; {', '.join(parts)}" if parts else ""


def _cell(text: str) -> str:
    """Text for a table cell: pipes outside code spans escaped (inside, the table keeps them)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(
        re.sub(r"(?<!\\)\|", "\\|", part) if i % 2 == 0 else part for i, part in enumerate(parts)
    )


def kargo_examples(name: str) -> str:
    """Kargo's reference page's examples for the step, as the conformance tests read them."""
    from tests.kargo_pages import examples

    if not (KARGO_PAGES / f"{name}.md").exists():
        return ""
    parts = [
        f"From Kargo's reference page for `{name}` (Apache-2.0; a copy is "
        f"`tests/reference/kargo-steps/{name}.md`); the conformance tests run each one."
    ]
    for example in examples(name):
        parts.append(f"### {example.heading}\n\n```yaml\n{example.text.rstrip()}\n```")
    return "\n\n".join(parts)


# ---------------------------------------------------------------- the CLI


def cli_reference() -> str:
    """Every command of the ``freightline`` Typer app: usage, help and options."""
    import typer._click as click
    import typer.main

    from freightline.app.cli import app

    root = typer.main.get_command(app)
    sections: list[str] = []

    def walk(command: Any, context: Any) -> None:
        if getattr(command, "hidden", False):
            return
        commands: dict[str, Any] = getattr(command, "commands", {})
        if command is not root:
            sections.append(_command_section(command, context, commands))
        for name, sub in commands.items():
            walk(sub, click.Context(sub, info_name=name, parent=context))

    walk(root, click.Context(root, info_name="freightline"))
    return "\n\n".join(sections)


def _command_section(command: Any, context: Any, commands: dict[str, Any]) -> str:
    usage = " ".join([context.command_path, *command.collect_usage_pieces(context)])
    lines = [f"### `{context.command_path}`", "", (command.help or "").strip(), ""]
    lines += ["```text", usage, "```", ""]
    rows = []
    for param in command.get_params(context):
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        if param.param_type_name == "argument":
            declaration = str(param.metavar or param.name or "").upper()
            help_text = str(getattr(param, "help", None) or "")
            if param.required:
                help_text += "  [required]"
        else:
            record = param.get_help_record(context)
            if record is None:
                continue
            declaration, help_text = record
        rows.append(f"| `{_cell(declaration)}` | {_cell(help_text)} |")
    if rows:
        lines += ["| argument or option | what |", "|---|---|", *rows, ""]
    if commands:
        names = ", ".join(f"`{context.command_path} {name}`" for name in commands)
        lines.append(f"Subcommands: {names}.")
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------- includes


_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")


def include(path: str, page_src: str) -> str:
    """The repository file ``path``, its relative links rewritten for ``docs/<page_src>``."""
    source = REPO / path
    if not source.is_file():
        raise PluginError(f"docs/{page_src}: <!-- include: {path} -->: no such file")
    source_dir = posixpath.dirname(path)
    page_dir = posixpath.dirname(f"docs/{page_src}")

    def relink(match: re.Match[str]) -> str:
        target, anchor = match.group("target"), match.group("anchor") or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join(source_dir, target))
        if not resolved.startswith("docs/"):
            raise PluginError(f"{path} links to {target}, outside docs/: the site cannot serve it")
        return f"]({posixpath.relpath(resolved, page_dir)}{anchor})"

    # The included file's own title gives way to the including page's.
    text = re.sub(r"\A# .*\n", "", source.read_text())
    return _LINK.sub(relink, text)


# ---------------------------------------------------------------- mkdocs events

STEPS_SECTION = "Promotion steps"
"""The nav section the step pages go into, one per registry step, after its first entry."""


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Every registry step's page into the nav, by name: a new step needs no nav edit."""
    _read_this_checkout()
    for entry in config["nav"] or ():
        if isinstance(entry, dict) and STEPS_SECTION in entry:
            section: list[Any] = entry[STEPS_SECTION]
            listed = {next(iter(e.values())) for e in section if isinstance(e, dict)}
            pages = [{name: f"steps/{name}.md"} for name in sorted(STEPS)]
            section[1:1] = [p for p in pages if next(iter(p.values())) not in listed]
            return config
    raise PluginError(f"mkdocs.yml: the nav has no {STEPS_SECTION!r} section for the steps")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    problems = step_page_problems(Path(config["docs_dir"]))
    if problems:
        raise PluginError("step reference pages:\n" + "\n".join(problems))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    source = page.file.src_uri
    name = source.removeprefix("steps/").removesuffix(".md")
    if source.startswith("steps/") and name in STEPS:
        markdown = markdown.replace(FIELDS_MARKER, field_table(STEPS[name]))
        markdown = markdown.replace(EXAMPLES_MARKER, kargo_examples(name))
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return _INCLUDE.sub(lambda m: include(m.group("path"), source), markdown)


def on_serve(server: LiveReloadServer, config: MkDocsConfig, builder: Any) -> LiveReloadServer:
    """``scripts/docs serve`` rebuilds on edits to what the hook reads outside docs/ too."""
    for path in (
        "deploy/README.md",
        "bench/README.md",
        "freightline/contracts/steps.py",
        "freightline/app/cli.py",
        "tests/reference/kargo-steps",
    ):
        server.watch(str(REPO / path))
    return server
