"""Packaging for ddrepro: every value comes from settings.ini (the nbdev 2 configuration)."""
from configparser import ConfigParser
from setuptools import find_namespace_packages, setup

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]


def _reqs(key):
    return c.get(key, "").split()


setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    keywords=c.get("keywords", "").split(),
    url=c["git_url"],
    project_urls={"Source": c["git_url"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
    author=c["author"],
    license=c["license"],
    python_requires=f">={c['min_python']}",
    # the asset folders (class tables, the embedded zoo) have no __init__.py: namespace packages holding data only
    package_dir={"": "."},                                # a flat layout: the editable install is a plain .pth path
    packages=find_namespace_packages(include=["ddrepro", "ddrepro.*"], exclude=["*.__pycache__"]),
    include_package_data=True,
    package_data={"ddrepro.assets.classes": ["*.tsv"], "ddrepro.assets.stopwords": ["*.txt"], "ddrepro.assets.zoo": ["*.json", "*.safetensors"]},
    install_requires=_reqs("requirements"),
    extras_require={"dev": _reqs("dev_requirements"), "hub": _reqs("hub_requirements")},
    entry_points={
        "console_scripts": c.get("console_scripts", "").split(),
        "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
