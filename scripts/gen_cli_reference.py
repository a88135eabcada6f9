"""Write docs/reference/cli.md, the CLI reference, from the Typer app (`llmtool.cli.app`).

    python scripts/gen_cli_reference.py           # regenerate docs/reference/cli.md
    python scripts/gen_cli_reference.py --check   # exit 1 if the committed file is stale

Every command, argument and option is taken from the app itself (the names, metavars, help text,
defaults and environment variables that `llmtool COMMAND --help` prints), so the reference cannot
drift from the code: tests/test_docs.py regenerates it in memory and fails when the committed file
differs.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any

import typer.main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference" / "cli.md"
REGENERATE = "python scripts/gen_cli_reference.py"

# Typer's command objects are its own (vendored) Click classes, which it does not export under a
# public name: they are typed as Any here and used only through their public attributes.
Command = Any
Context = Any

HEADER = f"""# CLI reference

<!-- Generated from llmtool.cli.app by `{REGENERATE}`; do not edit by hand. -->

Every command, argument and option of `llmtool`, as `llmtool COMMAND --help` prints them (defaults,
allowed values and environment variables included). The [command pages](../index.md#commands) explain
what each command is for, with examples; this page is the complete list. Regenerate it with
`{REGENERATE}` after changing an option; `tests/test_docs.py` fails while it is stale.
"""


def build() -> Command:
    """The Click command tree of the llmtool app, built afresh (every call returns new objects)."""
    from llmtool.cli import app

    return typer.main.get_command(app)


def escape(text: str) -> str:
    """Help text as Markdown that renders as written: code spans kept, `<` and `*` escaped, and the
    docs pointer every command's help ends with (`Docs: docs/commands/NAME.md`) made a link."""
    pieces = re.split(r"(`[^`]*`)", text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:  # a code span
            out.append(piece)
            continue
        piece = piece.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;").replace("](", "]\\(")
        piece = re.sub(r"\bdocs/commands/([\w-]+)\.md\b", r"[docs/commands/\1.md](../commands/\1.md)", piece)
        out.append(piece)
    text = "".join(out)
    return "\\" + text if text.startswith(("#", ">", "+", "-")) else text


def paragraphs(help_text: str) -> list[str]:
    """A docstring's paragraphs, each joined into one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", help_text.strip()) if p.strip()]


def commands(command: Command, ctx: Context, path: list[str]) -> list[tuple[list[str], Command, Context]]:
    """The command and, depth first in the app's order, its subcommands."""
    found = [(path, command, ctx)]
    list_commands = getattr(command, "list_commands", None)
    if list_commands is None:
        return found
    for name in list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
        found += commands(sub, sub_ctx, [*path, name])
    return found


def section(path: list[str], command: Command, ctx: Context) -> str:
    title = " ".join(["llmtool", *path])
    lines = [f"## `{title}`", ""]
    for paragraph in paragraphs(command.help or ""):
        lines += [escape(paragraph), ""]
    lines += ["```text", command.get_usage(ctx), "```", ""]
    for kind, heading in (("argument", "Arguments"), ("option", "Options")):
        records = [
            p.get_help_record(ctx)
            for p in command.get_params(ctx)
            if p.param_type_name == kind and not getattr(p, "hidden", False)
        ]
        records = [r for r in records if r is not None]
        if not records:
            continue
        lines += [f"**{heading}**", ""]
        for name, help_text in records:
            lines.append(f"- `{name}`" + (f": {escape(' '.join(help_text.split()))}" if help_text else ""))
        lines.append("")
    subcommands = [p for p in commands(command, ctx, path)[1:] if len(p[0]) == len(path) + 1]
    if subcommands:
        lines += ["**Commands**", ""]
        for sub_path, sub, _ in subcommands:
            name = " ".join(["llmtool", *sub_path])
            anchor = name.replace(" ", "-")
            lines.append(f"- [`{sub_path[-1]}`](#{anchor}): {escape(sub.get_short_help_str(limit=200))}")
        lines.append("")
    return "\n".join(lines)


def render(root: Command) -> str:
    """The reference page for a command tree (the app's, or a test's modified copy)."""
    # A fixed width: the usage lines must not depend on the terminal the generator runs in.
    ctx = root.make_context("llmtool", [], resilient_parsing=True, terminal_width=120, max_content_width=120)
    body = [section(path, command, c) for path, command, c in commands(root, ctx, [])]
    return HEADER + "\n" + "\n".join(body).rstrip() + "\n"


def staleness(committed: str, generated: str) -> str | None:
    """None when the committed reference is current; else what differs and how to fix it."""
    if committed == generated:
        return None
    diff = difflib.unified_diff(
        committed.splitlines(), generated.splitlines(), "committed", "generated", n=0, lineterm=""
    )
    excerpt = "\n".join(list(diff)[:20])
    return f"docs/reference/cli.md is stale: run `{REGENERATE}` to regenerate it.\n{excerpt}"


def main(argv: list[str]) -> int:
    generated = render(build())
    if "--check" in argv:
        committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        problem = staleness(committed, generated)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(generated, encoding="utf-8")
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
