"""Build the ddrepro documentation site, offline: `python docs/build.py [--out _docs] [--src _build/docs_src]`.

Assembles a Sphinx source tree under `--src` (generated; never edit it) and runs
`sphinx-build -W --keep-going -b html -c docs <src> <out>`:

- `index`: the README (included through MyST's `{include}`; links that would not resolve inside the site are
  rewritten to the repository on GitHub or dropped to their text),
- `nbs/<notebook>`: every API notebook `nbs/NN_*.ipynb` and the run notebooks, rendered by myst-nb with their
  stored outputs (never executed; `#| hide` cells dropped and `#|` directive lines stripped, as nbdev's site does),
- `api/ddrepro.<module>`: autodoc reference of each module exported by an API notebook,
- `methods/<method>`: per paper, a table of its equations and the functions citing them ("Eq. N" in docstrings),
- `figures/index`: the figure gallery, when `figures/README.md` exists,

with Debian's MathJax 2 (package libjs-mathjax) copied into the site's static files: no CDN anywhere.
"""
from __future__ import annotations

import argparse
import configparser
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
MATHJAX_DIR = Path("/usr/share/javascript/mathjax")
MATHJAX_SKIP = {"unpacked", "test"}  # MathJax's unminified sources and its test pages: not needed to render


class DocsError(RuntimeError):
    """Something the build needs is missing; the message says what to install."""


@dataclass(frozen=True)
class Method:
    """A paper whose equations the package implements: `name` is the page name and the paper's short name,
    `modules` the modules whose docstrings cite its equation numbers (the first is the method's own module:
    no page until it exists)."""
    name: str
    paper: str
    modules: tuple[str, ...]
    arxiv: str = ""


# One line per method; its equations page appears as soon as its first module is importable.
METHODS = (
    Method("SAS", "SAS: Semantic-aware Sampling for Generative Dataset Distillation", ("ddrepro.sas",), "2605.18012"),
    Method("DsCo", "Beyond Dataset Distillation: Lossless Dataset Concentration via Diffusion-Assisted Distribution Alignment",
           ("ddrepro.dsco",), "2603.27987"),
    # 02_diffusion numbers the DDPM / DDIM equations as CONCORD's §3.1 restates them
    Method("CONCORD", "CONCORD: Concept-Informed Diffusion for Dataset Distillation",
           ("ddrepro.concord", "ddrepro.diffusion")),
    Method("DPS", "Efficient Dataset Distillation via Diffusion-Driven Patch Selection for Improved Generalization",
           ("ddrepro.patchsel",)),
)


# ---------------------------------------------------------------------------------------------- settings

def settings(root: Path = ROOT) -> dict[str, str]:
    """The `[DEFAULT]` section of nbdev's `settings.ini` as a dict."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(root / "settings.ini", encoding="utf-8")
    return dict(cp["DEFAULT"])


def blob_url(cfg: dict[str, str]) -> str:
    """Base URL of the repository's files on GitHub, e.g. 'https://github.com/o/r/blob/main'."""
    return f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}"


# ---------------------------------------------------------------------------------------------- notebooks

def api_notebooks(nbs: Path) -> list[Path]:
    """The API notebooks `NN_*.ipynb` (and `NNa_*.ipynb`, a layer inserted between two) in layer order."""
    return sorted(p for p in nbs.glob("[0-9][0-9]*_*.ipynb") if re.fullmatch(r"\d\d[a-z]?", p.stem.split("_", 1)[0]))


def run_notebooks(nbs: Path) -> list[Path]:
    """The papermill run notebooks and the figure notebook."""
    return sorted(nbs.glob("run_*.ipynb")) + sorted(nbs.glob("make_figures.ipynb"))


def notebook_module(nb: Path, package: str = "ddrepro") -> str:
    """'nbs/10_sas.ipynb' → 'ddrepro.sas' (the module the API notebook exports)."""
    return f"{package}.{nb.stem.split('_', 1)[1]}"


DIRECTIVE_RE = re.compile(r"^\s*#\s*\|\s*(.*)$")


def nbdev_directives(source: str) -> list[str]:
    """The `#| word ...` directive lines of a code cell, e.g. ['export', 'hide']."""
    return [m.group(1).strip() for m in map(DIRECTIVE_RE.match, source.splitlines()) if m]


def site_notebook(nb: dict) -> dict:
    """A notebook as the site shows it: cells with a `#| hide` directive dropped, `#|` directive lines removed
    from code cells (cells left empty, such as `#| default_exp`, dropped); outputs kept exactly as stored."""
    cells = []
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code":
            if any(d.split()[:1] == ["hide"] for d in nbdev_directives(src)):
                continue
            src = "\n".join(l for l in src.splitlines() if not DIRECTIVE_RE.match(l))
            if not src.strip() and not cell.get("outputs"):
                continue                                   # e.g. a `#| default_exp` cell
            cell = {**cell, "source": src}
        cells.append(cell)
    return {**nb, "cells": cells}


# ---------------------------------------------------------------------------------------------- links

SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# a code span (or fenced block) — left alone — or an inline link / image with an optional title
INLINE_RE = re.compile(r"(?P<code>(?P<ticks>`+).*?(?P=ticks))"
                       r"|(?P<bang>!?)\[(?P<text>(?:[^\]\\]|\\.)*)\]"
                       r"\(\s*<?(?P<target>[^)\s>]*)>?(?P<title>\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)", re.S)
REFDEF_RE = re.compile(r"^(?P<head> {0,3}\[[^\]]+\]:[ \t]*)<?(?P<target>\S+?)>?(?P<tail>(?:[ \t].*)?)$", re.M)


def rewrite_links(text: str, resolve: Callable[[str], str | None]) -> str:
    """Markdown `text` with every inline link / image target and reference definition passed through
    `resolve(target) -> new target, or None to drop the link (its text stays)`. Code spans and fenced code
    are left untouched; absolute URLs, `mailto:` and `#anchor` links are never passed to `resolve`."""
    def inline(m: re.Match) -> str:
        if m.group("code"):
            return m.group(0)
        target = m.group("target")
        new = target if is_external(target) else resolve(target)
        if new is None:
            return m.group("text")
        return f"{m.group('bang')}[{m.group('text')}]({new}{m.group('title') or ''})"

    def refdef(m: re.Match) -> str:
        target = m.group("target")
        new = target if is_external(target) else resolve(target)
        return "" if new is None else f"{m.group('head')}{new}{m.group('tail')}"

    return REFDEF_RE.sub(refdef, INLINE_RE.sub(inline, text))


ANCHOR_RE = re.compile(r"^ {0,3}<a\s+(?:id|name)=[\"']([^\"']+)[\"']\s*>\s*</a>\s*$", re.M)


def html_anchors_to_targets(text: str) -> str:
    """Raw-HTML anchors alone on a line (`<a id="x"></a>`, as GitHub renders them) → MyST targets `(x)=`, so
    that `[...](#x)` links resolve in Sphinx as they do on GitHub."""
    return ANCHOR_RE.sub(lambda m: f"({m.group(1)})=", text)


def site_markdown(text: str, resolve: Callable[[str], str | None]) -> str:
    """A repository markdown file as the site includes it: anchors made targets, links resolved."""
    return rewrite_links(html_anchors_to_targets(text), resolve)


def is_external(target: str) -> bool:
    """True for URLs with a scheme, protocol-relative and site-absolute paths, and pure `#anchor` links."""
    return not target or bool(SCHEME_RE.match(target)) or target.startswith(("#", "/"))


def link_resolver(site_files: set[str], repo: Path, base: str, blob: str) -> Callable[[str], str | None]:
    """A `resolve` for `rewrite_links` for a markdown file at `<base>/` in both the repository `repo` and the
    site (whose files are `site_files`, posix paths relative to the site root): a target that is a site file
    stays (MyST links documents and turns other files into downloads); one that exists only in the repository
    becomes its GitHub URL (`blob`/…, `tree` for folders); one that exists nowhere is dropped."""
    def resolve(target: str) -> str | None:
        path, sep, anchor = target.partition("#")
        rel = os.path.normpath(os.path.join(base, path)).replace(os.sep, "/")
        if rel.startswith(".."):
            return None
        if rel in site_files:
            return target
        if (repo / rel).is_file():
            return f"{blob}/{rel}{sep}{anchor}"
        if (repo / rel).is_dir():
            return f"{blob.replace('/blob/', '/tree/', 1)}/{rel}{sep}{anchor}"
        return None
    return resolve


# ---------------------------------------------------------------------------------------------- equations

# "Eq. 4", "Eq.-7", "Eqs. 5 and 6", "Eqs. 4–6" (a list only after the plural)
EQ_RE = re.compile(r"\b(?:Eqs\.[\s-]*(?P<many>\d+[a-z]?\b(?:\s*(?:,|and|or|&|–|-|—)\s*\d+[a-z]?\b)*)"
                   r"|Eq\.[\s-]*(?P<one>\d+[a-z]?)\b)")
# text right before a citation that attributes it to another paper: "Song et al. Eq. 12", "Ho & Salimans
# (2022) Eq. 6", "Ho et al. 2020 Eq. 14"
FOREIGN_RE = re.compile(r"(?:\bet al\.?|\b(?P<name>[A-Z][\w-]*)(?:\s*&\s*[A-Z][\w-]*)?)(?:,?\s*\(?\d{4}\)?)?,?\s*$")
NOT_AUTHORS = {"See", "In", "By", "As", "From", "With", "Per", "Cf", "And", "Or", "Via", "Using", "Uses", "The",
               "Of", "Then", "Like", "Unlike", "Paper", "Stage"}


@dataclass(frozen=True)
class Citation:
    """One "Eq. N" in a docstring: `qualname` cites equation `eq`; `implements` when the docstring opens with
    the citation ("Eq. 4: d_ang(...) = ..."); `line` is the docstring paragraph it is in, on one line."""
    eq: str
    qualname: str
    implements: bool
    line: str


def eq_numbers(nums: str) -> list[str]:
    """'4' → ['4']; '5 and 6' / '5, 6' → ['5', '6']; '4–6' → ['4', '5', '6'] (ranges of plain numbers)."""
    out: list[str] = []
    for part in re.split(r"\s*(?:,|and|or|&)\s*", nums.strip()):
        lo, dash, hi = _split_range(part)
        if dash and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        else:
            out += [p for p in (lo, hi) if p]
    return out


def _split_range(part: str) -> tuple[str, str, str]:
    """'4–6' → ('4', '–', '6'); '7' → ('7', '', '')."""
    m = re.fullmatch(r"(\d+[a-z]?)\s*([–—-])\s*(\d+[a-z]?)", part)
    return (m.group(1), m.group(2), m.group(3)) if m else (part, "", "")


def is_foreign(before: str, own: str = "") -> bool:
    """Whether the text right before an "Eq." attributes it to another paper (an author name, "et al.",
    optionally a year); `own` (the method's short name, e.g. 'SAS') and common words don't count."""
    m = FOREIGN_RE.search(before)
    if not m:
        return False
    name = m.group("name")
    return name is None or (name not in NOT_AUTHORS and name.lower() != own.lower())


def paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs, each joined into one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", inspect.cleandoc(doc or "")) if p.strip()]


def docstring_citations(doc: str, qualname: str, own: str = "") -> list[Citation]:
    """The paper's equation citations in one docstring (citations of other papers skipped); `line` is the
    paragraph the citation is in."""
    out = []
    for i, para in enumerate(paragraphs(doc)):
        for m in EQ_RE.finditer(para):
            if is_foreign(para[:m.start()], own):
                continue
            opens = i == 0 and m.start() == 0
            out += [Citation(eq, qualname, opens, para) for eq in eq_numbers(m.group("many") or m.group("one"))]
    return out


def documented_objects(module: ModuleType) -> Iterable[tuple[str, object]]:
    """(qualified name, object) of the functions and classes defined in `module` (in definition order) and
    the methods defined in those classes."""
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                func = getattr(member, "__func__", member)
                if not attr.startswith("_") and inspect.isfunction(func):
                    yield f"{module.__name__}.{name}.{attr}", func


def module_citations(modules: Iterable[ModuleType], own: str = "") -> list[Citation]:
    """Every equation citation in the docstrings of `modules`."""
    return [c for mod in modules for qn, obj in documented_objects(mod)
            for c in docstring_citations(obj.__doc__ or "", qn, own)]


def eq_sort_key(eq: str) -> tuple[int, str]:
    """'7' < '7a' < '10'."""
    m = re.match(r"(\d+)(.*)", eq)
    return (int(m.group(1)), m.group(2)) if m else (10 ** 9, eq)


def md_escape(text: str) -> str:
    """Text safe inside a MyST table cell (no markup, no math, no column breaks)."""
    return re.sub(r"([\\`*_\[\]<>|$~{}])", r"\\\1", text)


def obj_ref(qualname: str) -> str:
    """A MyST cross-reference to an autodoc entry, shown by its short name."""
    return f"{{py:obj}}`~{qualname}`"


def equations_table(citations: list[Citation]) -> str:
    """A markdown table: one row per equation number — the functions implementing it (their docstring opens
    with the citation), the others citing it, and the implementing docstring's paragraph."""
    rows = ["| Eq. | implemented by | also cited by | docstring |", "|---|---|---|---|"]
    for eq in sorted({c.eq for c in citations}, key=eq_sort_key):
        cs = [c for c in citations if c.eq == eq]
        impl = list(dict.fromkeys(c.qualname for c in cs if c.implements))
        cited = [q for q in dict.fromkeys(c.qualname for c in cs) if q not in impl]
        line = next((c.line for c in cs if c.implements), "")
        rows.append(f"| Eq. {eq} | {', '.join(map(obj_ref, impl))} | {', '.join(map(obj_ref, cited))} "
                    f"| {md_escape(shorten(line, 160))} |")
    return "\n".join(rows)


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters with an ellipsis."""
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def equations_page(method: Method, modules: list[ModuleType]) -> str:
    """The MyST page of one method's equations, generated from the docstrings of `modules`."""
    paper = f"*{md_escape(method.paper)}*"
    if method.arxiv:
        paper += f" ([arXiv:{method.arxiv}](https://arxiv.org/abs/{method.arxiv}))"
    names = ", ".join(f"`{m.__name__}`" for m in modules)
    cits = module_citations(modules, method.name)
    table = equations_table(cits) if cits else "No docstring cites an equation of this paper yet."
    return (f"# {method.name} equations\n\n{paper}.\n\n"
            f"Each equation of the paper (numbered as in the paper) with the functions whose docstrings cite it, "
            f"linked to the API reference. Generated from the docstrings of {names}; citations attributed to "
            f"other papers (\"Song et al. Eq. 12\") are left out.\n\n{table}\n")


def available_modules(names: Iterable[str]) -> list[ModuleType]:
    """The importable modules among `names` (imported), in order."""
    return [importlib.import_module(n) for n in names if importlib.util.find_spec(n) is not None]


# ---------------------------------------------------------------------------------------------- pages

def api_page(module: str) -> str:
    """The MyST page of one module's autodoc reference."""
    # eval-rst: autodoc emits reST, which a MyST page would otherwise parse as markdown
    return (f"# {module}\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n   :undoc-members:\n"
            f"   :show-inheritance:\n```\n")


def toctree(caption: str, entries: list[str]) -> str:
    """A hidden MyST toctree (the sidebar shows it) or '' when there are no entries."""
    if not entries:
        return ""
    return "```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(entries) + "\n```\n"


def index_page(sections: list[tuple[str, list[str]]]) -> str:
    """The home page: the (link-rewritten) README, then the site's toctrees."""
    return "```{include} _readme.md\n```\n\n" + "\n".join(toctree(c, e) for c, e in sections)


def gallery_page() -> str:
    """The figure gallery: `figures/README.md`, included (its links resolve from `figures/` as in the repo)."""
    return "```{include} _readme.md\n```\n"


# ---------------------------------------------------------------------------------------------- tree

def mathjax_files(src: Path = MATHJAX_DIR) -> dict[str, Path]:
    """`_static/mathjax/...` → file, for Debian's MathJax 2; fails naming the package when it is missing."""
    if not (src / "MathJax.js").is_file():
        raise DocsError(f"MathJax 2 not found at {src}: install the Debian package libjs-mathjax "
                         "(apt-get install -y libjs-mathjax); the docs never load MathJax from a CDN")
    out = {}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] not in MATHJAX_SKIP and path.is_file():
            out[f"_static/mathjax/{rel.as_posix()}"] = path
    return out


def site_files(root: Path = ROOT) -> dict[str, bytes | Path]:
    """Every file of the Sphinx source tree: relative path → content (bytes) or the file to copy."""
    cfg, nbs, figures = settings(root), root / "nbs", root / "figures"
    files: dict[str, bytes | Path] = {}
    api_nbs, runs = api_notebooks(nbs), run_notebooks(nbs)
    for nb in api_nbs + runs:
        files[f"nbs/{nb.name}"] = json.dumps(site_notebook(json.loads(nb.read_text(encoding="utf-8"))),
                                             indent=1, ensure_ascii=False).encode()
    has_gallery = (figures / "README.md").is_file()
    if has_gallery:  # the figures themselves; tables (.md) stay GitHub links: they are not pages of the site
        for f in sorted(figures.rglob("*")):
            if f.is_file() and f.suffix != ".md":
                files[f"figures/{f.relative_to(figures).as_posix()}"] = f
    modules = [notebook_module(nb) for nb in api_nbs if importlib.util.find_spec(notebook_module(nb))]
    for m in modules:
        files[f"api/{m}.md"] = api_page(m).encode()
    methods = []
    for method in METHODS:
        if importlib.util.find_spec(method.modules[0]) is not None:
            page = equations_page(method, available_modules(method.modules))
            files[f"methods/{method.name.lower()}.md"] = page.encode()
            methods.append(f"methods/{method.name.lower()}")
    names, blob = set(files), blob_url(cfg)
    readme = (root / "README.md").read_text(encoding="utf-8")
    files["_readme.md"] = site_markdown(readme, link_resolver(names, root, "", blob)).encode()
    if has_gallery:
        gallery = (figures / "README.md").read_text(encoding="utf-8")
        files["figures/_readme.md"] = site_markdown(gallery, link_resolver(names, root, "figures", blob)).encode()
        files["figures/index.md"] = gallery_page().encode()
    files["index.md"] = index_page([
        ("Notebooks", [f"nbs/{nb.stem}" for nb in api_nbs]),
        ("Run notebooks", [f"nbs/{nb.stem}" for nb in runs]),
        ("Equations", methods),
        ("API reference", [f"api/{m}" for m in modules]),
        ("Figures", ["figures/index"] if has_gallery else []),
    ]).encode()
    files.update(mathjax_files())
    return files


def sync_tree(dest: Path, files: dict[str, bytes | Path]) -> int:
    """Make `dest` hold exactly `files`, rewriting only what changed (so Sphinx re-reads only changed pages);
    returns the number of files written."""
    written = 0
    for rel, content in files.items():
        path = dest / rel
        if isinstance(content, Path):
            st = content.stat()
            if path.is_file() and path.stat().st_size == st.st_size and path.stat().st_mtime == st.st_mtime:
                continue
            data = content.read_bytes()
        else:
            data = content
            if path.is_file() and path.read_bytes() == data:
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if isinstance(content, Path):
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        written += 1
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return written


def sphinx_command(src: Path, out: Path, doctrees: Path, quiet: bool = True, fresh: bool = True) -> list[str]:
    """The warning-free HTML build: every warning is an error, all of them reported. `fresh` (-E) re-reads
    every page: an incremental build re-reads only changed pages, so it neither repeats an unchanged page's
    warnings nor refreshes its links to changed API entries."""
    return [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-c", str(ROOT / "docs"),
            "-d", str(doctrees), *(["-E"] if fresh else []), *(["-q"] if quiet else []), str(src), str(out)]


def build(out: Path = ROOT / "_docs", src: Path = ROOT / "_build" / "docs_src", quiet: bool = True,
          fresh: bool = True) -> Path:
    """Assemble the source tree in `src` and build the site into `out` (raises CalledProcessError on a warning)."""
    out, src = Path(out).resolve(), Path(src).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    written = sync_tree(src, site_files())
    print(f"docs: {src} assembled ({written} files written) in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    subprocess.run(sphinx_command(src, out, src.parent / f"{src.name}_doctrees", quiet, fresh), check=True, cwd=ROOT)
    print(f"docs: {out}/index.html built in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: `python docs/build.py [--out _docs] [--src _build/docs_src] [-v] [--incremental]`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "_docs", help="HTML output folder (default _docs)")
    p.add_argument("--src", type=Path, default=ROOT / "_build" / "docs_src", help="generated Sphinx sources")
    p.add_argument("-v", "--verbose", action="store_true", help="Sphinx's progress output")
    p.add_argument("--incremental", action="store_true",
                   help="re-read only changed pages (faster; may miss unchanged pages' warnings and stale links)")
    a = p.parse_args(argv)
    try:
        build(a.out, a.src, quiet=not a.verbose, fresh=not a.incremental)
    except DocsError as e:
        print(f"docs: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"docs: sphinx-build failed (exit {e.returncode}); every warning is an error", file=sys.stderr)
        return e.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
