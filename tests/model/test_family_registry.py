"""Model families are registered once, by their own modules, and model/ keeps its layering:
no family imports the lookup back, no project import hides in a function, and the process
environment is read in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clipsearch.model import families, family_registry
from clipsearch.model.base import TwoTowerModel
from clipsearch.model.errors import CheckpointError

MODEL = Path(__file__).resolve().parents[2] / "model"
FAMILY_MODULES = ("siglip", "mobileclip", "mobileclip_vit", "hf_text", "nllb")


def _tree(name: str) -> ast.Module:
    return ast.parse((MODEL / f"{name}.py").read_text(encoding="utf-8"))


def _imported(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_every_family_is_registered_once_by_its_own_module() -> None:
    entries = family_registry.registered()
    names = [f.name for f in entries]
    assert sorted(names) == ["hf-text", "mobileclip", "mobileclip-vit", "nllb-siglip", "siglip"]
    assert tuple(names) == families.FAMILIES
    for entry in entries:
        assert issubclass(entry.model, TwoTowerModel)
        assert entry.model.family == entry.name
        assert entry.model.__module__ == entry.infer_config.__module__
        assert family_registry.get(entry.name) is entry
    with pytest.raises(CheckpointError, match="unknown model family 'nope'"):
        family_registry.get("nope")


@pytest.mark.parametrize(
    ("arch", "hf_text", "family"),
    [
        ("vit_base_patch16_siglip_224", False, "siglip"),
        ("vit_base_patch16_siglip_384", True, "nllb-siglip"),
        ("fastvit_mci2", False, "mobileclip"),
        ("vit_base_mci_224", False, "mobileclip-vit"),
        (None, True, "hf-text"),
        (None, False, None),
    ],
)
def test_an_open_clip_config_names_exactly_one_family(
    arch: str | None, hf_text: bool, family: str | None
) -> None:
    vision = {"timm_model_name": arch} if arch else {}
    text = {"hf_model_name": "xlm-roberta-base"} if hf_text else {}
    data = {"model_cfg": {"vision_cfg": vision, "text_cfg": text}}
    assert families.open_clip_family(data, Path("."), "cfg") == family


def test_an_unknown_image_tower_is_refused_naming_what_is_supported() -> None:
    data = {"model_cfg": {"vision_cfg": {"timm_model_name": "convnext_base"}, "text_cfg": {}}}
    with pytest.raises(
        CheckpointError, match="unsupported timm image tower 'convnext_base'"
    ) as err:
        families.open_clip_family(data, Path("."), "cfg")
    assert "fastvit_mci" in str(err.value) and "siglip" in str(err.value)


def test_family_modules_do_not_import_the_lookup_and_the_registry_imports_no_family() -> None:
    for name in FAMILY_MODULES:
        assert "clipsearch.model.families" not in _imported(_tree(name)), name
    registry_imports = _imported(_tree("family_registry"))
    for name in FAMILY_MODULES:
        assert f"clipsearch.model.{name}" not in registry_imports


def test_no_project_module_is_imported_inside_a_function() -> None:
    hidden = []
    for path in sorted(MODEL.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "clipsearch"
                ):
                    hidden.append(f"{path.relative_to(MODEL)}:{node.lineno}")
    assert hidden == []


def test_the_environment_is_read_only_at_the_model_layers_edges() -> None:
    edges = {"environment.py", "finetune/cli.py"}  # the Python API's door; torchrun's variables
    readers = sorted(
        str(path.relative_to(MODEL))
        for path in MODEL.rglob("*.py")
        if "os.environ" in path.read_text(encoding="utf-8")
        or "getenv(" in path.read_text(encoding="utf-8")
    )
    assert set(readers) <= edges, readers
