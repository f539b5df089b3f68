"""The docs against the code: every relative link and `#anchor` in README.md and docs/*.md resolves, every
`cvlab …` example in their code blocks parses against the real CLI, and the README stays short.

Examples are parsed, never run: the click command tree is built from the Typer app and each example goes
through `make_context` down to its leaf command, so an unknown option, a wrong subcommand, a bad option value
or a missing required argument fails, naming the page and line. Nothing imports torch."""

from __future__ import annotations

import functools
import re
import shlex
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 350

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...
# An argument that stands for something the reader fills in and that cannot be parsed as it is written.
PLACEHOLDER = re.compile(r"^(\.\.\.|…)$|<[^>]+>")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------------------------------------- markdown


def split_code(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(the page with every fenced block blanked, line count kept; the blocks as (first line number, lines))."""
    prose, blocks, fence, block = [], [], None, None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, block = m.group(1), (n + 1, [])
            prose.append("")
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            blocks.append(block)
            fence, block = None, None
            prose.append("")
        elif fence is not None:
            block[1].append(line)
            prose.append("")
        else:
            prose.append(line)
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans, emphasis and links reduced to text), lower-cased,
    punctuation dropped except hyphens and underscores, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = HEADING.match(line)
        if not m:
            continue
        s = slug(m.group(2))
        if s in seen:  # GitHub numbers repeated headings: x, x-1, x-2
            seen[s] += 1
            out.add(f"{s}-{seen[s]}")
        else:
            seen[s] = 0
            out.add(s)
    return frozenset(out)


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code, external ones left out."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    text = "\n".join(prose)
    text = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # same offsets
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)
            if not EXTERNAL.match(m.group(1))]


def broken(page: Path, target: str) -> str | None:
    """Why a relative link does not resolve, or None."""
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    if not dest.exists():
        return f"{target}: {file} does not exist"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"{target}: an anchor into a file that is not a markdown page"
        if anchor not in anchors(dest):
            return f"{target}: {rel(dest)} has no heading #{anchor}"
    return None


def examples(path: Path) -> list[tuple[int, str, list[str] | None, str]]:
    """Every `cvlab …` command line in the page's code blocks: (line, the line as written, argv after `cvlab`
    or None when it is skipped, why it is skipped). `$ ` prompts, `.venv/bin/cvlab`, `python -m cvlab` and
    `torchrun … -m cvlab` are recognised; `\\` continuations are joined; `# comments` are dropped."""
    _, blocks = split_code(path.read_text(encoding="utf-8"))
    found = []
    for first, lines in blocks:
        i = 0
        while i < len(lines):
            start, line = first + i, lines[i].strip()
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            command = line[2:] if line.startswith("$ ") else line
            try:
                words = shlex.split(command, comments=True)
            except ValueError:  # an unbalanced quote: not a command line (an output line, say)
                words = []
            if not words:
                continue
            if Path(words[0]).name == "cvlab":
                argv = words[1:]
            elif Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "cvlab"]:
                argv = words[3:]
            elif words[0] == "torchrun" and "cvlab" in words:
                at = words.index("cvlab")
                if words[at - 1] != "-m":
                    continue
                argv = words[at + 1:]
            else:
                continue
            holes = [w for w in argv if PLACEHOLDER.search(w)]
            if holes:
                found.append((start, line, None, f"placeholder {holes[0]!r}"))
            else:
                found.append((start, line, argv, ""))
    return found


# --------------------------------------------------------------------------------------------------- CLI


@functools.cache
def cli():
    """(the root click command of `cvlab`, the click exceptions module, the Exit exception)."""
    import typer
    import typer.main

    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - typer on top of click
        from click import exceptions

    from cvlab.cli import app

    return typer.main.get_command(app), exceptions, typer.Exit


def parse(argv: list[str]):
    """Parse `cvlab ARGV` as the CLI would, without running it: `make_context` on every group down the path,
    then on the leaf command. Returns the leaf context, or None for `--help`. Raises the CLI's usage errors,
    except a path that does not exist (an example's file is not on this machine)."""
    command, exceptions, exit_ = cli()
    name, args, parent = "cvlab", list(argv), None
    try:
        while hasattr(command, "resolve_command"):  # a group: its own options, then the subcommand's name
            ctx = command.make_context(name, args, parent=parent)
            rest = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []),
                    *ctx.args]
            if not rest:
                ctx.fail("Missing command.")
            name, command, args = command.resolve_command(ctx, rest)
            parent = ctx
        return command.make_context(name, args, parent=parent)
    except exit_:  # --help
        return None
    except exceptions.BadParameter as e:
        if "does not exist" in e.format_message():
            return None
        raise


# ------------------------------------------------------------------------------------------------- tests

LINK_CASES = [pytest.param(page, id=rel(page)) for page in PAGES]
EXAMPLE_CASES = [pytest.param(page, n, line, argv, why, id=f"{rel(page)}:{n}")
                 for page in PAGES for n, line, argv, why in examples(page)]


@pytest.mark.parametrize("page", LINK_CASES)
def test_links_resolve(page: Path):
    problems = [f"{rel(page)}:{n}: {why}" for n, target in links(page) if (why := broken(page, target))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page, n, line, argv, why", EXAMPLE_CASES)
def test_example_parses(page: Path, n: int, line: str, argv: list[str] | None, why: str):
    if argv is None:
        pytest.skip(f"{rel(page)}:{n}: {why}: {line}")
    _, exceptions, _ = cli()
    try:
        parse(argv)
    except exceptions.ClickException as e:
        pytest.fail(f"{rel(page)}:{n}: `{line}` does not parse: {e.format_message()}", pytrace=False)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_every_page_has_a_title():
    bad = [rel(p) for p in PAGES if not p.read_text(encoding="utf-8").startswith("# ")]
    assert not bad, f"pages that do not start with a '# ' title: {bad}"


def test_docs_have_examples_and_links():
    """The collection above found what is there (a broken extractor would pass every test on nothing)."""
    assert len(EXAMPLE_CASES) >= 50
    assert sum(len(links(p)) for p in PAGES) >= 30


@pytest.mark.parametrize("argv, error", [
    (["train", "x.yaml", "--no-such-option"], "NoSuchOption"),
    (["trian", "x.yaml"], "UsageError"),
    (["data", "chek", "--type", "svt"], "UsageError"),
    (["eval"], "MissingParameter"),
    (["augment", "preview", "exp.yaml"], "MissingParameter"),  # --out is required
    (["export", "runs/x", "--format"], "BadOptionUsage"),  # an option without its value
    (["config", "show", "a.yaml", "b.yaml"], "UsageError"),  # an extra argument
    (["lm", "build", "labels.txt", "--order", "many"], "BadParameter"),
    (["data"], "UsageError"),  # a group alone is not a command
])
def test_wrong_examples_fail(argv: list[str], error: str):
    _, exceptions, _ = cli()
    with pytest.raises(getattr(exceptions, error)):
        parse(argv)


def test_right_examples_parse():
    assert parse(["train", "--resume", "runs/q/1"]).params["resume"] is not None
    assert parse(["runs", "clean", "--yes"]).params["yes"] is True
    assert parse(["train", "--help"]) is None
    assert parse(["import", "dtrb", "m.pth", "--sensitive"]).params["sensitive"] is True


def test_extraction(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# Title `x`",
        "see [a](#title-x), [b](other.md#x-y) and [c](https://example.com)",
        "```bash",
        "# a comment, not a heading",
        "$ cvlab train a.yaml --set x=1   # trailing comment",
        ".venv/bin/cvlab eval runs/q \\",
        "    --data folder:crops --protocol raw",
        "torchrun --nproc-per-node 4 -m cvlab train b.yaml",
        "pip install 'cvlab[decode]'",
        "cvlab predict runs/q <image>",
        "```",
        "## Other: `--flag` (x.y)",
        "## Other: `--flag` (x.y)",
        "[not a link](#inside) in `code [x](y)`",
    ]), encoding="utf-8")
    assert anchors(page) == {"title-x", "other---flag-xy", "other---flag-xy-1"}
    assert links(page) == [(2, "#title-x"), (2, "other.md#x-y"), (14, "#inside")]
    assert [(n, argv) for n, _, argv, _ in examples(page)] == [
        (5, ["train", "a.yaml", "--set", "x=1"]),
        (6, ["eval", "runs/q", "--data", "folder:crops", "--protocol", "raw"]),
        (8, ["train", "b.yaml"]),
        (10, None),
    ]
    assert broken(page, "#title-x") is None
    assert "does not exist" in broken(page, "other.md#x-y")
    assert "no heading" in broken(page, "#inside")
