"""The documentation: the API reference covers the public surface, public docstrings
document their arguments, the examples in docstrings and in the README run, the notebooks
import only public names, and docs/index.md is the README.

`make docs-check` builds the site with `mkdocs build --strict` (broken links and anchors
fail it) and runs the notebooks in quick mode; these tests read the sources, so they are
fast and need neither mkdocs nor a kernel.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path

import pytest

import ndes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PUBLIC_MODULES = (ndes, ndes.data, ndes.train, ndes.plot, ndes.diffusion)

_FENCE = re.compile(r"```python\n(.*?)```", re.S)


def public_names(module: types.ModuleType) -> list[str]:
    """`module.__all__`, or (for a package without one) every attribute not starting with
    an underscore that is not a submodule."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        n
        for n in vars(module)
        if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
    )


def public_objects() -> dict[str, object]:
    """Qualified public name -> object, each object once (its first public name)."""
    out: dict[str, object] = {}
    seen: set[int] = set()
    for module in PUBLIC_MODULES:
        for name in public_names(module):
            obj = getattr(module, name)
            if id(obj) not in seen:
                seen.add(id(obj))
                out[f"{module.__name__}.{name}"] = obj
    return out


def api_directives() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))
    return set(re.findall(r"^::: ([\w.]+)\s*$", text, re.M))


def test_all_matches_the_public_attributes():
    """Each public module's `__all__` names only attributes it has, and every attribute
    without a leading underscore (other than a submodule) is in `__all__`: a name
    re-exported but left out of `__all__` would escape the API reference check below."""
    for module in PUBLIC_MODULES:
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module.__name__} has no __all__"
        absent = [n for n in names if not hasattr(module, n)]
        assert not absent, f"{module.__name__}.__all__ names missing attributes: {absent}"
        assert len(set(names)) == len(names), f"{module.__name__}.__all__ has duplicates"
        loose = sorted(
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and not isinstance(v, types.ModuleType)
            and n not in names
            and n != "annotations"
        )
        assert not loose, f"add to {module.__name__}.__all__ (or prefix with _): {loose}"


def test_api_reference_lists_every_public_name():
    documented = api_directives()
    missing = [
        f"{m.__name__}.{n}"
        for m in PUBLIC_MODULES
        for n in public_names(m)
        if f"{m.__name__}.{n}" not in documented
    ]
    assert not missing, f"add `::: NAME` to a page in docs/api/ for: {missing}"


def test_api_reference_names_resolve():
    """Every `::: ndes.X` in docs/api/ names a public object (a stale entry after a move or
    a rename fails here, before mkdocstrings fails the build)."""
    stale = []
    for target in sorted(api_directives()):
        module_name, _, name = target.rpartition(".")
        module = {m.__name__: m for m in PUBLIC_MODULES}.get(module_name)
        if module is None or name not in public_names(module):
            stale.append(target)
    assert not stale, f"docs/api/ documents names that are not public: {stale}"


def _source_file(obj: object) -> str | None:
    try:
        path = Path(inspect.getsourcefile(obj))  # type: ignore[arg-type]
    except TypeError:
        return None
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return None


def _parameters(obj: object) -> list[str]:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if not p.name.startswith("_")
        and p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def undocumented_arguments() -> dict[str, tuple[str | None, list[str]]]:
    """Public name -> (source file, arguments its docstring does not name in backticks);
    a missing docstring lists every argument (or `<no docstring>`)."""
    out = {}
    for qualname, obj in public_objects().items():
        if not callable(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        params = _parameters(obj)
        missing = [p for p in params if not re.search(rf"`{re.escape(p)}\b", doc)]
        if not doc:
            missing = missing or ["<no docstring>"]
        if missing:
            out[qualname] = (_source_file(obj), missing)
    return out


def test_public_docstrings_name_their_arguments():
    """Every public callable has a docstring that names each of its arguments (as `name`
    in backticks: an **Arguments:** entry or the prose)."""
    gaps = {name: missing for name, (_, missing) in undocumented_arguments().items()}
    assert not gaps, f"document these arguments: {gaps}"


def test_every_public_object_has_a_docstring():
    """A docstring at all, in every file (mkdocstrings renders it as the API entry)."""
    bare = [
        name
        for name, obj in public_objects().items()
        if callable(obj) and not (inspect.getdoc(obj) or "").strip()
    ]
    assert not bare, f"public objects without a docstring: {bare}"


def test_the_argument_check_can_fail():
    def f(alpha, beta):
        """Uses `alpha` only."""

    obj = types.SimpleNamespace()
    assert _parameters(f) == ["alpha", "beta"]
    assert not re.search(r"`beta\b", inspect.getdoc(f))
    assert _parameters(obj) == []


def _docstring_examples() -> list[tuple[str, str]]:
    found = []
    for qualname, obj in public_objects().items():
        docs = [inspect.getdoc(obj) or ""]
        if inspect.isclass(obj):
            docs += [
                inspect.getdoc(member) or ""
                for name, member in vars(obj).items()
                if not name.startswith("_") and callable(member)
            ]
        for doc in docs:
            for i, block in enumerate(_FENCE.findall(doc)):
                found.append((f"{qualname}[{i}]", block))
    return found


def _namespace() -> dict:
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    return dict(diffrax=diffrax, eqx=eqx, jax=jax, jnp=jnp, np=np, optax=optax, ndes=ndes)


@pytest.mark.parametrize("name,code", _docstring_examples(), ids=lambda v: str(v)[:40])
def test_docstring_examples_run(name, code):
    exec(compile(code, f"<docstring of {name}>", "exec"), _namespace())


def test_docstring_examples_are_found():
    names = [name for name, _ in _docstring_examples()]
    assert "ndes.GridBrownianPath[0]" in names


def _markdown_blocks(path: Path) -> list[str]:
    return _FENCE.findall(path.read_text())


@pytest.mark.parametrize(
    "path,index",
    [
        ("README.md", 0),
        ("docs/getting_started.md", 0),
        # compiles a whole `ndes.fit` step: ~10 s idle, ~55 s on a loaded 2-core machine
        pytest.param("docs/getting_started.md", 1, marks=pytest.mark.slow),
    ],
)
def test_readme_and_getting_started_examples_run(path, index):
    code = _markdown_blocks(ROOT / path)[index]
    exec(compile(code, f"<{path} block {index}>", "exec"), {})


def test_index_is_the_readme():
    """docs/index.md is README.md with `(docs/` links made relative to docs/
    (`sed 's#(docs/#(#g' README.md > docs/index.md`, done by `make docs-index`)."""
    expected = (ROOT / "README.md").read_text().replace("(docs/", "(")
    assert (DOCS / "index.md").read_text() == expected, "run `make docs-index`"


NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_four_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {
        "regularize_your_diffrax_code",
        "latent_sde",
        "irregular_classification",
        "regularizers_compared",
    } <= names


_PRIVATE = re.compile(r"\bndes(\.\w+)*\._\w+|from ndes(\.\w+)* import [^\n]*\b_\w+")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_public_names_and_have_a_quick_mode(path):
    nb = json.loads(path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert not _PRIVATE.search(code), f"{path.name} uses a private ndes name"
    assert 'os.environ.get("NDES_QUICK")' in code, f"{path.name} has no NDES_QUICK mode"
    for module in ("ndes.data", "ndes.train", "ndes.plot"):
        for attr in re.findall(rf"\b{re.escape(module)}\.(\w+)", code):
            assert attr in public_names(getattr(ndes, module.split(".")[1])), (path, attr)
    for attr in re.findall(r"\bndes\.(\w+)", code):
        assert attr in public_names(ndes) or attr in ("data", "train", "plot"), (path, attr)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_links_name_existing_pages(path):
    """Notebook markdown is rendered as HTML under examples/NAME/ and mkdocs does not
    rewrite its links, so they are site URLs (`../../results/`): each must name a page."""
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert not re.search(r"\]\([^)#]*\.md\b", text), f"{path.name}: link a site URL, not a .md"
    for page, anchor in re.findall(r"\]\(\.\./\.\./([\w/]+?)/(?:#([^)]*))?\)", text):
        assert (DOCS / f"{page}.md").exists(), (path.name, page)
        if anchor:
            assert anchor in _heading_slugs(DOCS / f"{page}.md"), (path.name, page, anchor)


def _heading_slugs(path: Path) -> set[str]:
    """The ids mkdocs gives the headings of a page (Python-Markdown's toc slugify of the
    heading text without its inline code marks)."""
    from markdown.extensions.toc import slugify

    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {
        slugify(m.group(1).replace("`", ""), "-")
        for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)
    }


def test_private_name_pattern_can_fail():
    assert _PRIVATE.search("from ndes.models._latent_sde import LatentSDE")
    assert _PRIVATE.search("ndes.models._sde.solve_sde(x)")
    assert not _PRIVATE.search("ndes.data.load_uea('x', missing=0.3)")


def test_docs_name_no_private_module_as_api():
    """The pages this task owns do not present private modules (`ndes.x._y`) as API."""
    owned = [
        p
        for p in DOCS.glob("*.md")
        if p.name
        not in ("results.md", "training.md", "benchmarks.md", "reliability.md", "architecture.md")
    ]
    owned.append(ROOT / "README.md")
    hits = [
        (p.name, m.group(0))
        for p in owned
        for m in re.finditer(r"\bndes(\.\w+)*\._\w+", p.read_text())
    ]
    assert not hits, hits
