"""The documentation builder's pure parts (docs/build.py): equation tables from docstrings, README link
rewriting, notebook clean-up for the site, the source-tree sync. Fast: nothing here runs Sphinx."""
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build():
    """docs/build.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ddrepro_docs_build", ROOT / "docs" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


TOY = '''
from os.path import join          # imported: not documented here, never listed

def dist(a, b):
    """Eq. 1: d(a, b) = |a - b|, the distance."""

def score(x):
    """Eq. 2: s(x) = -d(x, c) * 2.

    Uses Eq. 1 for d."""

def both(x):
    """Select by Eqs. 1 and 2 (our Eq. 2, not Song et al. Eq. 12 nor Ho & Salimans (2022) Eq. 6)."""

def _private(x):
    """Eq. 3: hidden helpers are not part of the API."""

class Model:
    """A model."""
    def fit(self):
        """Fits with Eq.-2 values (SAS Eq. 4 too)."""
'''


@pytest.fixture
def toy():
    """A module whose docstrings cite Eq. 1 and Eq. 2 (and other papers' equations)."""
    mod = types.ModuleType("toy")
    exec(TOY, mod.__dict__)
    return mod


def test_eq_numbers(build):
    assert build.eq_numbers("4") == ["4"]
    assert build.eq_numbers("5 and 6") == ["5", "6"]
    assert build.eq_numbers("5, 7") == ["5", "7"]
    assert build.eq_numbers("4–6") == ["4", "5", "6"]
    assert build.eq_numbers("7a") == ["7a"]


def test_is_foreign(build):
    assert build.is_foreign("DDIM (Song et al. ")
    assert build.is_foreign("CFG (Ho & Salimans (2022) ")
    assert build.is_foreign("Ho et al. 2020 ")
    assert not build.is_foreign("Stage 1 (§3.2.2, ")
    assert not build.is_foreign("the margin term of ")
    assert not build.is_foreign("See ")
    assert not build.is_foreign("SAS ", own="SAS")


def test_citations_of_toy_module(build, toy):
    cits = build.module_citations([toy], own="SAS")
    got = {(c.eq, c.qualname, c.implements) for c in cits}
    assert ("1", "toy.dist", True) in got and ("2", "toy.score", True) in got
    assert ("1", "toy.score", False) in got                      # a later paragraph cites Eq. 1
    assert {("1", "toy.both", False), ("2", "toy.both", False)} <= got   # "Eqs. 1 and 2" and "our Eq. 2"
    assert ("2", "toy.Model.fit", False) in got and ("4", "toy.Model.fit", False) in got  # "Eq.-2", own "SAS Eq. 4"
    assert not {c.eq for c in cits} & {"3", "6", "12"}           # private helper, other papers' equations
    assert not any(c.qualname == "toy.join" for c in cits)


def test_equations_table(build, toy):
    table = build.equations_table(build.module_citations([toy]))
    rows = [re.split(r"(?<!\\)\|", row) for row in table.splitlines()]   # cells: split at unescaped pipes
    assert rows[0][1].strip() == "Eq." and rows[0][2].strip() == "implemented by"
    assert [r[1].strip() for r in rows[2:]] == ["Eq. 1", "Eq. 2"]
    eq1 = rows[2]
    assert eq1[2].strip() == "{py:obj}`~toy.dist`"
    assert "{py:obj}`~toy.score`" in eq1[3] and "{py:obj}`~toy.both`" in eq1[3] and "toy.dist" not in eq1[3]
    assert r"d(a, b) = \|a - b\|" in eq1[4]                      # the docstring, escaped for a table cell


def test_equations_page(build, toy):
    method = build.Method("Toy", "Toy: A Paper About Distances", ("toy",), "2601.00001")
    page = build.equations_page(method, [toy])
    assert page.startswith("# Toy equations\n")
    assert "*Toy: A Paper About Distances*" in page and "https://arxiv.org/abs/2601.00001" in page
    assert "| Eq. 1 | {py:obj}`~toy.dist` |" in page
    empty = build.equations_page(method, [types.ModuleType("empty")])
    assert "No docstring cites an equation" in empty


def test_methods_registry_covers_sas(build):
    sas = next(m for m in build.METHODS if m.name == "SAS")
    assert sas.paper == "SAS: Semantic-aware Sampling for Generative Dataset Distillation"
    assert sas.arxiv == "2605.18012" and sas.modules[0] == "ddrepro.sas"


def test_sas_equations_from_the_package(build):
    import ddrepro.sas
    cits = build.module_citations([ddrepro.sas], own="SAS")
    impl = {c.eq: c.qualname for c in cits if c.implements}
    assert impl["4"] == "ddrepro.sas.angular_distance"
    assert {"5", "6", "7", "8", "9"} <= set(impl)


def test_rewrite_links(build):
    seen = []

    def resolve(t):
        seen.append(t)
        return {"figures/a.png": "figures/a.png", "params/x.yaml": "https://h/blob/main/params/x.yaml"}.get(t)

    text = ("See ![fig](figures/a.png \"title\") and [params](params/x.yaml), [gone](nope.md), "
            "[web](https://example.org), [here](#two-commands), `[code](figures/b.png)`.\n\n"
            "```\n[fenced](fenced.md)\n```\n[ref]: params/x.yaml\n[bad]: missing.txt\n")
    out = build.rewrite_links(text, resolve)
    assert '![fig](figures/a.png "title")' in out
    assert "[params](https://h/blob/main/params/x.yaml)" in out
    assert "[gone]" not in out and "gone," in out                # dropped to its text
    assert "[web](https://example.org)" in out and "[here](#two-commands)" in out
    assert "`[code](figures/b.png)`" in out and "[fenced](fenced.md)" in out
    assert "[ref]: https://h/blob/main/params/x.yaml" in out and "missing.txt" not in out
    assert "https://example.org" not in seen and "#two-commands" not in seen and "fenced.md" not in seen


def test_link_resolver(build, tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "x.yaml").write_text("a: 1")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "t.md").write_text("| a |")
    blob = "https://github.com/o/r/blob/main"
    site = {"nbs/10_sas.ipynb", "figures/a.png"}
    top = build.link_resolver(site, tmp_path, "", blob)
    assert top("nbs/10_sas.ipynb#stage-1") == "nbs/10_sas.ipynb#stage-1"      # a page of the site
    assert top("figures/a.png") == "figures/a.png"
    assert top("params/x.yaml") == f"{blob}/params/x.yaml"                    # only in the repository
    assert top("params") == "https://github.com/o/r/tree/main/params"
    assert top("missing.md") is None and top("../outside.md") is None
    sub = build.link_resolver(site, tmp_path, "figures", blob)               # figures/README.md
    assert sub("a.png") == "a.png" and sub("t.md") == f"{blob}/figures/t.md"
    assert sub("../nbs/10_sas.ipynb") == "../nbs/10_sas.ipynb"


def test_readme_links_all_resolve(build):
    """The real README: after rewriting, every relative link target is a file of the site."""
    site = {f"nbs/{p.name}" for p in (ROOT / "nbs").glob("*.ipynb")}
    site |= {f"figures/{p.name}" for p in (ROOT / "figures").glob("*") if p.suffix != ".md"}
    out = build.site_markdown((ROOT / "README.md").read_text(encoding="utf-8"),
                              build.link_resolver(site, ROOT, "", build.blob_url(build.settings())))
    left = []
    build.rewrite_links(out, lambda t: left.append(t) or t)
    assert all(t.split("#")[0] in site for t in left), left


def test_html_anchors_to_targets(build):
    text = 'x\n\n<a id="eval_sensitivity"></a>\n\n## Heading\n\ninline <a id="no"></a> stays\n'
    out = build.html_anchors_to_targets(text)
    assert "(eval_sensitivity)=\n" in out and '<a id="no"></a>' in out


def test_site_notebook(build):
    out_cell = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# sas\n", "#| not a directive in markdown"], "metadata": {}},
        {"cell_type": "code", "source": ["#| default_exp sas"], "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": ["#| hide\n", "from nbdev import *"], "outputs": [], "metadata": {}},
        {"cell_type": "code", "source": ["#| export\n", "x = 1\n", "x"], "outputs": [out_cell], "metadata": {}},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    cells = build.site_notebook(nb)["cells"]
    assert len(cells) == 2
    assert cells[0]["source"] == nb["cells"][0]["source"]
    assert cells[1]["source"] == "x = 1\nx" and cells[1]["outputs"] == [out_cell]
    assert build.nbdev_directives("#| export\n#|hide\nx") == ["export", "hide"]


def test_notebooks_and_modules(build):
    api = build.api_notebooks(ROOT / "nbs")
    assert api[0].name == "00_core.ipynb" and all(p.name[:2].isdigit() for p in api)
    assert build.notebook_module(ROOT / "nbs" / "10_sas.ipynb") == "ddrepro.sas"
    assert not {p.name for p in build.run_notebooks(ROOT / "nbs")} & {p.name for p in api}


def test_pages(build):
    page = build.api_page("ddrepro.sas")
    assert "```{eval-rst}\n.. automodule:: ddrepro.sas\n   :members:" in page
    assert build.toctree("Empty", []) == ""
    index = build.index_page([("Notebooks", ["nbs/00_core"]), ("Figures", [])])
    assert index.startswith("```{include} _readme.md")
    assert ":caption: Notebooks" in index and "Figures" not in index


def test_mathjax_missing_names_the_package(build, tmp_path):
    with pytest.raises(build.DocsError, match="libjs-mathjax"):
        build.mathjax_files(tmp_path)


def test_mathjax_files(build, tmp_path):
    (tmp_path / "MathJax.js").write_text("//")
    for d in ("config", "unpacked", "test"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "f.js").write_text("//")
    assert set(build.mathjax_files(tmp_path)) == {"_static/mathjax/MathJax.js", "_static/mathjax/config/f.js"}


def test_sync_tree(build, tmp_path):
    src = tmp_path / "file.txt"
    src.write_text("copied")
    dest = tmp_path / "site"
    assert build.sync_tree(dest, {"a/b.md": b"page", "c.txt": src}) == 2
    assert (dest / "a" / "b.md").read_bytes() == b"page" and (dest / "c.txt").read_text() == "copied"
    assert build.sync_tree(dest, {"a/b.md": b"page", "c.txt": src}) == 0       # unchanged: nothing written
    (dest / "stale").mkdir()
    (dest / "stale" / "old.md").write_text("x")
    assert build.sync_tree(dest, {"a/b.md": b"new"}) == 1
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["a", "a/b.md"]


def test_sphinx_command_is_strict(build, tmp_path):
    cmd = build.sphinx_command(tmp_path / "src", tmp_path / "out", tmp_path / "dt")
    assert {"-W", "--keep-going", "-E"} <= set(cmd) and cmd[cmd.index("-b") + 1] == "html"
    assert cmd[cmd.index("-c") + 1] == str(ROOT / "docs")
    assert "-E" not in build.sphinx_command(tmp_path / "src", tmp_path / "out", tmp_path / "dt", fresh=False)
