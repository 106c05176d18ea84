"""Sphinx configuration of the ddrepro site. Don't run sphinx-build on it by hand: `python docs/build.py`
assembles the source tree (README, notebooks, API pages, equations pages, gallery) and builds with `-c docs`."""
import configparser
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))
_cfg = configparser.ConfigParser(interpolation=None)
_cfg.read(ROOT / "settings.ini", encoding="utf-8")
_ini = _cfg["DEFAULT"]

project = _ini["lib_name"]
author = _ini["author"]
copyright = _ini["copyright"]
release = version = _ini["version"]

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
exclude_patterns = ["_*.md", "**/_*.md", "_static", "**/.ipynb_checkpoints"]  # _readme.md: included, not pages

# --- notebooks: stored outputs only, never executed
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# --- math: Debian's MathJax 2.7.9 (libjs-mathjax), copied by build.py into the site's _static/mathjax.
# Sphinx refuses query strings in local asset paths, so the combined configuration is named in the in-page
# configuration (`config: [...]`) instead of `MathJax.js?config=TeX-AMS-MML_HTMLorMML`.
mathjax_path = "mathjax/MathJax.js"
mathjax2_config = {
    "config": ["TeX-AMS-MML_HTMLorMML.js"],
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "processClass": "math|tex2jax_process|mathjax_process|output_area",
                "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
    "showMathMenu": False,
    "messageStyle": "none",
}
# myst's default rewrites a MathJax 3/4 configuration (which MathJax 2 does not read) and marks every page
# `tex2jax_ignore`; the tex2jax settings above already restrict MathJax 2 to Sphinx's math elements.
myst_update_mathjax = False

# --- API reference: the docstrings are plain text, not reST (see setup below)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]  # + the generated tree's _static (MathJax), added in setup
html_css_files = ["ddrepro.css"]
html_theme_options = {"repository_url": _ini["git_url"], "use_repository_button": True,
                      "path_to_docs": "nbs", "repository_branch": _ini.get("branch", "main")}
html_show_sourcelink = False


def plain_docstring(app, what, name, obj, options, lines):
    """Show a plain-text docstring verbatim (prose-styled by ddrepro.css) instead of parsing it as reST,
    where its `*`, `|`, backticks and indentation would be read as markup and raise warnings."""
    if not any(line.strip() for line in lines):
        return
    body = [f"   {line}" if line.strip() else "" for line in lines]
    lines[:] = [".. code-block:: text", "   :class: ddrepro-docstring", "", *body, ""]


def add_generated_static(app, config):
    """Serve the generated source tree's _static (Debian's MathJax, copied by build.py) besides docs/_static."""
    config.html_static_path = [*config.html_static_path, str(Path(app.srcdir) / "_static")]


def outputs_beside_doctrees(app):
    """myst-nb writes notebook images to `<outdir>/../jupyter_execute` (for `_docs`: the repository root);
    keep them beside the doctrees instead (Sphinx copies them into `_images` either way)."""
    app.env.mystnb_config = app.env.mystnb_config.copy(output_folder=str(Path(app.doctreedir) / "jupyter_execute"))


def setup(app):
    app.connect("builder-inited", outputs_beside_doctrees, priority=900)  # after myst-nb's own (500)
    app.connect("autodoc-process-docstring", plain_docstring)
    app.connect("config-inited", add_generated_static)
    return {"parallel_read_safe": True}
