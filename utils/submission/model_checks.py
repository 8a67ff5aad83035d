"""models.py and the weights as the grader uses them. The grader's first steps run once, in a fresh interpreter
(grader.py: import as `custom_model`, never in sys.modules; `ImageEncoder()`; strict load; eval(); the shape
check) and decide those steps: a failure is one FAIL line quoting the grader's error and naming its step, with the
fix and what this process can add (the import that broke, the differing keys, the architecture). Then the kit's
closer looks, here, where the probes need the model anyway: imports, no pre-trained weights, the course's class
variables, the feature statistics, finite (B, 1000) `get_features`.

Tests: tests/test_eval.py, tests/test_grader.py.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import torch

from utils.checkpoint import ADD_STATISTICS_COMMAND, FITTED_FLAG, CheckpointError, read_weights, weight_mismatches
from utils.submission.course import (ALLOWED_MODULES, COURSE_CLASS_VARIABLES, DOWNLOAD_FUNCTIONS, MODELS_FILE,
                                     NETWORK_MODULES, PRETRAINED_KEYWORDS, PROJECT_ROOT, TOLERATED_MODULES,
                                     WEIGHTS_FILE, Report)
from utils.submission.grader import GraderRun, run_course_grader

LOAD_CHECK = "weights load strictly"
SHAPE_CHECK = "get_features (grader's randn check)"
REEXPORT_FIX = ("export the weights again (utils.checkpoint.export_encoder or safetensors.torch.save_model) and copy "
                "the file again")
GRADER_OUTPUT = "run `python -m utils.submission.grader -i <submission folder> --first-steps` to see the whole output"


def check_model(report: Report, models_path: Path, weights_path: Path | None, device: torch.device):
    """All checks of models.py and the weights. Returns the model (eval mode, on `device`, weights loaded) when
    it is usable for the probes, else None."""
    try:
        tree = ast.parse(models_path.read_text(encoding="utf-8"), filename=str(models_path))
    except (SyntaxError, UnicodeDecodeError) as error:
        report.failed("models.py syntax", f"{models_path} cannot be parsed: {type(error).__name__}: {error}",
                      "fix the syntax error (run `python -c \"import models\"` in the folder to see it)")
        tree = None
    grader = grader_first_steps(models_path, weights_path) if tree is not None else None
    if grader is not None and grader.failed_step == "environment":
        report.failed("grader's sequence", f"the grader's sequence could not be run on this submission: "
                      f"{grader.error}", GRADER_OUTPUT)
    if tree is not None:
        check_no_pretrained(report, tree)
    if tree is None or grader.failed_step == "import":
        if tree is not None:
            report.failed("models.py imports the grader's way", f"in a fresh `python -I`, beside a stand-in for "
                          f"the course's utils.py, {grader.step_text()}", import_fix(grader, tree))
        if weights_path is not None:   # whether the weights file itself is intact can still be told
            check_weights_readable(report, weights_path)
        return None
    if grader.failed_step != "environment":
        report.passed("models.py imports the grader's way", "imported as `custom_model` (spec_from_file_location, "
                      "exec_module, not in sys.modules) in a fresh `python -I` beside a stand-in for the course's "
                      "utils.py")
    check_imports(report, tree)
    module = import_in_process(report, models_path)
    model = build_encoder(report, module, grader) if module is not None else None
    if model is None:
        if module is not None and weights_path is not None:
            check_weights_readable(report, weights_path)
        return None
    usable = check_class_variables(report, module.ImageEncoder, model)
    if weights_path is None or not check_weights(report, model, module, weights_path, grader):
        # get_features depends on the weights file (the design's training statistics live in it): without them a
        # second failure would only mislead
        report.note("get_features was not checked: " + ("there is no weights file" if weights_path is None
                                                        else "the weights did not load"))
        return None
    usable &= check_statistics_fitted(report, model, weights_path)
    model.to(device).eval()
    usable &= check_get_features(report, model, device, grader)
    return model if usable else None


# Runs of the grader's first steps in this process, by what decides them: models.py and the weights' tensors (the
# grader's strict load never reads the file's metadata). The same files checked again, or a file whose metadata
# alone changed (the tests), do not pay for a fresh interpreter each time.
_grader_runs: dict[str, GraderRun] = {}


def grader_first_steps(models_path: Path, weights_path: Path | None) -> GraderRun:
    """The grader's import, build, strict load, eval() and shape check on these files, in a fresh `python -I`."""
    digest = hashlib.sha256(models_path.read_bytes())
    if weights_path is not None:
        digest.update(_tensor_bytes(weights_path))
    key = digest.hexdigest() + ("" if weights_path is not None else "-no-weights")
    if key not in _grader_runs:
        files = {MODELS_FILE: models_path, **({WEIGHTS_FILE: weights_path} if weights_path is not None else {})}
        _grader_runs[key] = run_course_grader(models_path.parent, first_steps=True, files=files)
    return _grader_runs[key]


def _tensor_bytes(path: Path) -> bytes:
    """A safetensors file without its metadata: the tensors' names, dtypes, shapes and data, read by the kit's one
    reader (the whole file when it is not readable: then every byte may matter to the grader's error)."""
    try:
        tensors, _ = read_weights(path)
    except CheckpointError:
        return path.read_bytes()
    return b"".join(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()
                    for name, t in sorted(tensors.items()))


def grader_note(grader: GraderRun, step: str) -> str:
    """"; grader step N (...) fails with ..." when the grader's sequence failed at `step`, else ""."""
    return f"; {grader.step_text()}" if grader.failed_step == step else ""


def import_fix(grader: GraderRun, tree: ast.AST) -> str:
    """How to mend models.py when the grader cannot import it, from its error and the static imports."""
    text = f"{grader.error or ''}\n{grader.traceback or ''}"
    project = [f"`{m}` (line {n})" for m, n in imported_modules(tree) if classify_import(m) == "project"]
    if "dataclasses" in text and "has no attribute '__dict__'" in text:
        return ("models.py looks its own module up in sys.modules while it is imported, and the grader never "
                "puts it there: here a @dataclass under `from __future__ import annotations` (dataclasses "
                "resolves string annotations through sys.modules[cls.__module__]). Delete the `from __future__ "
                "import annotations` line, or write the class without @dataclass")
    if "relative import" in text:
        return ("the grader imports models.py as a lone module, in no package: a relative import cannot work "
                "there. Copy the code into models.py")
    if project:
        return (f"models.py imports {', '.join(project)} of this project, but the grader has its own utils.py and "
                f"nothing else beside models.py: copy what models.py needs into models.py itself and delete "
                f"those imports")
    if "FileNotFoundError" in text or "No such file" in text:
        return ("models.py reads a file when it is imported, and the grader's folder holds only the four "
                "submitted files and its own eval.py and utils.py: write the values into models.py, or store "
                "tensors as buffers in the weights")
    if "No module named" in text:
        return "the grader may not have that package: use torch, torchvision and the standard library only"
    return f"{GRADER_OUTPUT}, and fix models.py so that it imports on its own"


# ----------------------------------------------------------------------------------------------------------
# Static looks at models.py: its imports, pre-trained weights and downloads (also inside functions, which the
# grader's import does not run)
# ----------------------------------------------------------------------------------------------------------

def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(module as written, line) for every import in the file; relative imports keep their leading dots."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(("." * node.level + (node.module or ""), node.lineno))
    return sorted(found, key=lambda item: item[1])


def classify_import(module: str) -> str:
    """"ok", "tolerated" (numpy), "project" (utils, relative or a module of this project) or "foreign"."""
    root = module.split(".")[0]
    if module.startswith(".") or root == "utils":
        return "project"
    if root in ALLOWED_MODULES or root == "__future__" or root in sys.stdlib_module_names:
        return "ok"
    if root in TOLERATED_MODULES:
        return "tolerated"
    return "project" if (PROJECT_ROOT / f"{root}.py").is_file() or (PROJECT_ROOT / root).is_dir() else "foreign"


def check_imports(report: Report, tree: ast.AST) -> None:
    """models.py imports only torch, torchvision and the standard library."""
    verdicts = [(module, line, classify_import(module)) for module, line in imported_modules(tree)]
    named = {kind: [f"`{m}` (line {n})" for m, n, v in verdicts if v == kind]
             for kind in ("project", "foreign", "tolerated")}
    if named["project"]:
        report.failed("models.py imports", f"imports project module(s) {', '.join(named['project'])}; expected "
                      f"torch, torchvision and the standard library only. The grader puts its OWN utils.py beside "
                      f"models.py and nothing else from this project",
                      "copy what models.py needs into models.py itself and delete those imports")
    if named["foreign"]:
        report.failed("models.py imports", f"imports {', '.join(named['foreign'])}, which the grader may not have; "
                      f"the course allows torch and torchvision only",
                      "rewrite that part with torch/torchvision and delete those imports")
    if named["tolerated"] and not (named["project"] or named["foreign"]):
        report.warned("models.py imports", f"imports {', '.join(named['tolerated'])}; the course allows torch and "
                      f"torchvision only (numpy is usually installed with torch)", "prefer torch equivalents")
    if not any(named.values()):
        modules = sorted({m.split(".")[0] for m, _, _ in verdicts if m != "__future__"})
        report.passed("models.py imports", f"{', '.join(modules) or 'nothing'} (torch, torchvision and the "
                      f"standard library only)")


def _dotted_name(node: ast.AST) -> str:
    """`torch.hub.load` for an Attribute/Name chain, "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join(reversed([*parts, node.id])) if isinstance(node, ast.Name) else ""


def _network_import(node: ast.Import | ast.ImportFrom) -> str:
    """"import requests" / "from torch.hub import load_state_dict_from_url" when the import reaches for the
    network or pre-trained weights, else ""."""
    if isinstance(node, ast.Import):
        risky = [a.name for a in node.names if a.name.split(".")[0] in NETWORK_MODULES or a.name.startswith("torch.hub")]
        return f"import {', '.join(risky)}" if risky else ""
    module, names = node.module or "", [a.name for a in node.names]
    risky = (module.split(".")[0] in NETWORK_MODULES or module.startswith("torch.hub")
             or any(n in DOWNLOAD_FUNCTIONS for n in names) or (module == "torch" and "hub" in names))
    return f"from {module} import {', '.join(names)}" if risky else ""


def pretrained_or_network_uses(tree: ast.AST) -> list[str]:
    """Places where models.py may use pre-trained weights or the network, "line N: what", in line order."""
    found = []
    reported = set()   # nodes inside a name chain already reported (torch.hub inside torch.hub.load)
    for node in ast.walk(tree):   # breadth first: an outer chain comes before the chains inside it
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _network_import(node):
            found.append((node.lineno, _network_import(node)))
        elif isinstance(node, ast.Call):
            found += [(node.lineno, f"{k.arg}={ast.unparse(k.value)}") for k in node.keywords
                      if k.arg in PRETRAINED_KEYWORDS
                      and not (isinstance(k.value, ast.Constant) and k.value.value in (None, False))]
        elif isinstance(node, (ast.Attribute, ast.Name)) and id(node) not in reported:
            name = _dotted_name(node)
            if name == "torch.hub" or name.startswith("torch.hub.") or name.split(".")[-1] in DOWNLOAD_FUNCTIONS:
                found.append((node.lineno, name))
                reported.update(id(inner) for inner in ast.walk(node))
    return [f"line {line}: {text}" for line, text in sorted(found, key=lambda item: item[0])]


def check_no_pretrained(report: Report, tree: ast.AST) -> None:
    uses = pretrained_or_network_uses(tree)
    if uses:
        report.warned("no pre-trained weights or downloads", f"models.py may load pre-trained weights or use the "
                      f"network: {'; '.join(uses)}. The course forbids pre-trained weights (training from "
                      f"scratch is verified) and the grader may have no network",
                      "build every module from scratch (weights=None, no torch.hub, no downloads)")
    else:
        report.passed("no pre-trained weights or downloads")


# ----------------------------------------------------------------------------------------------------------
# The model in this process: build, class variables, strict load, statistics, features
# ----------------------------------------------------------------------------------------------------------

_import_counter = itertools.count()


def import_in_process(report: Report, models_path: Path):
    """models.py as a module under a unique name (never `models`, so that the project's own models.py is left
    alone), writing no __pycache__ into the submission folder."""
    name = f"_submitted_models_{next(_import_counter)}"
    spec = importlib.util.spec_from_file_location(name, models_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    was, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
        return module
    except Exception as error:
        del sys.modules[name]
        report.failed("models.py imports in this process", f"importing {models_path} raised "
                      f"{type(error).__name__}: {error}", "run `python -c \"import models\"` in the submission "
                      "folder and fix the error")
        return None
    finally:
        sys.dont_write_bytecode = was


def build_encoder(report: Report, module, grader: GraderRun):
    """`ImageEncoder()` with no arguments, as the grader builds it (or None, with a failed check)."""
    note = grader_note(grader, "build")
    cls = getattr(module, "ImageEncoder", None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        found = "defines no `ImageEncoder`" if cls is None else f"defines ImageEncoder as a {type(cls).__name__}"
        report.failed("ImageEncoder exists", f"models.py {found}; the grader builds `models.ImageEncoder()`, a "
                      f"subclass of torch.nn.Module{note}", "keep `class ImageEncoder(nn.Module)` from the template")
        return None
    report.passed("ImageEncoder exists")
    fix = "give every constructor argument a default: the grader calls ImageEncoder()"
    try:
        if note:
            raise RuntimeError(grader.step_text())
        model = cls()
    except Exception as error:
        message = f"ImageEncoder() with no arguments raised {type(error).__name__}: {error}" if not note else str(error)
        report.failed("ImageEncoder() builds", message, fix)
        return None
    arch = getattr(model, "arch", None)
    report.passed("ImageEncoder() builds", f"{sum(p.numel() for p in model.parameters()):,} parameters" +
                  (f", arch {arch!r}" if isinstance(arch, str) else ""))
    return model


def check_class_variables(report: Report, cls, model) -> bool:
    """input_dim 64, input_channels 3, feature_dim 1000, proj_dim 128, on the class and on the instance."""
    wrong = [f"{name} = {getattr(owner, name, '<missing>')!r} on the {where} (expected {expected})"
             for name, expected in COURSE_CLASS_VARIABLES.items()
             for owner, where in ((cls, "class"), (model, "instance")) if getattr(owner, name, None) != expected]
    if wrong:
        report.failed("class variables", "; ".join(dict.fromkeys(wrong)) + ". The grader relies on them",
                      "restore " + ", ".join(f"`{k} = {v}`" for k, v in COURSE_CLASS_VARIABLES.items()) +
                      " in class ImageEncoder; the course forbids changing them")
        return False
    report.passed("class variables", ", ".join(f"{k} {v}" for k, v in COURSE_CLASS_VARIABLES.items()))
    return True


def check_weights_readable(report: Report, path: Path) -> None:
    """When models.py cannot be used the weights cannot be matched against it; whether the file itself is intact
    can still be told."""
    try:
        weights, _ = read_weights(path)
    except CheckpointError as error:
        report.failed(LOAD_CHECK, str(error), REEXPORT_FIX)
        return
    report.passed("weights file readable", f"{len(weights)} tensors (not matched against ImageEncoder(): "
                  f"models.py must work first)")


def check_weights(report: Report, model, module, path: Path, grader: GraderRun) -> bool:
    """Strict loading, as the grader's safetensors.torch.load_model(model, path): the grader's run decides, this
    process lists the differences; then the feature statistics must belong to models.py's design."""
    from safetensors.torch import load_model
    note = grader_note(grader, "load")
    try:
        weights, metadata = read_weights(path)
    except CheckpointError as error:
        report.failed(LOAD_CHECK, f"{error}{note}", REEXPORT_FIX)
        return False
    built = model.arch if isinstance(getattr(model, "arch", None), str) else getattr(module, "ARCH", None)
    trained = metadata.get("arch")
    arch_note = (f"weights were trained with arch {trained!r} but models.py builds {built!r} (ARCH = \"{built}\")"
                 if trained and isinstance(built, str) and trained != built else "")
    problems = weight_mismatches(model, weights)
    if problems or note:
        fix = (f"set ARCH = \"{trained}\" in the submitted models.py (utils.submission.assemble_submission does "
               f"it), or submit weights of a {built!r} model" if arch_note else "export the weights again with "
               "utils.checkpoint.export_encoder from an ImageEncoder() built by this models.py (not a torch.compile "
               "or DataParallel wrapper, whose keys carry a prefix)")
        found = (f"{path.name} does not match ImageEncoder(): " + "; ".join(problems) + note if problems
                 else grader.step_text())
        report.failed(LOAD_CHECK, (arch_note + ". " if arch_note else "") + found, fix)
        return False
    load_model(model, str(path), strict=True)   # exactly the grader's call, which passed
    stale = statistics_design_mismatch(model, metadata)
    if arch_note:
        report.warned(LOAD_CHECK, f"the {len(weights)} tensors load, but the metadata says: {arch_note}",
                      "check that the submitted weights are the ones you meant")
    elif stale:
        report.failed(LOAD_CHECK, f"{path.name} loads, but {stale}", "fit them again for this design, without "
                      f"changing the network: {ADD_STATISTICS_COMMAND.format(weights=path)}")
        return False
    else:
        report.passed(LOAD_CHECK, f"{len(weights)} tensors match ImageEncoder() exactly" +
                      (f" (arch {trained!r})" if trained else ""))
    return True


def check_statistics_fitted(report: Report, model, path: Path) -> bool:
    """A design that centres or whitens needs the training images' statistics in the weights: an unfitted file
    loads strictly (the buffers exist, at the identity) but computes another get_features than was measured."""
    flag = dict(model.named_buffers()).get(FITTED_FLAG)
    if flag is None:        # a models.py whose design needs no statistics (or the course's template)
        return True
    if float(flag) != 1.0:
        report.failed("feature statistics fitted", f"{path.name} holds feature_statistics_fitted = {float(flag):g}, "
                      f"expected 1: get_features' training statistics (means, whitening) were never fitted, so it "
                      f"would compute the design without them, not what training measured",
                      f"fit them, without changing the network: {ADD_STATISTICS_COMMAND.format(weights=path)}")
        return False
    report.passed("feature statistics fitted", "feature_statistics_fitted = 1")
    return True


def statistics_design_mismatch(model, metadata: dict) -> str | None:
    """What differs when the weights' statistics were fitted for another feature design (their "feature_design"
    metadata) than models.py's; None when they agree or either says nothing about it."""
    recorded, design = metadata.get("feature_design"), getattr(model, "feature_design", None)
    if not recorded or not hasattr(design, "as_dict") or not getattr(model, "needs_feature_statistics", True):
        return None
    try:
        recorded = json.loads(recorded)
    except ValueError:
        return f"its feature_design metadata is not JSON: {recorded[:100]!r}"
    current = design.as_dict()
    changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
    return (f"its feature statistics were fitted for another get_features design than models.py's FEATURE_DESIGN "
            f"(differs in {', '.join(changed)}: file {[recorded.get(k) for k in changed]}, models.py "
            f"{[current.get(k) for k in changed]}), so get_features would apply statistics that do not belong to "
            f"it") if changed else None


def check_get_features(report: Report, model, device: torch.device, grader: GraderRun) -> bool:
    """get_features on ToTensor-like inputs (uniform in [0, 1]), one image and a batch of 64, and the grader's
    check on randn(1, 3, 64, 64): finite (B, 1000) floats. The first failure is the one FAIL line; when the
    grader's shape check failed and none of these does, its error is."""
    generator = torch.Generator().manual_seed(0)
    cases = [("get_features (1 image)", torch.rand(1, 3, 64, 64, generator=generator)),
             ("get_features (batch of 64)", torch.rand(64, 3, 64, 64, generator=generator)),
             (SHAPE_CHECK, torch.randn(1, 3, 64, 64, generator=generator))]
    note = grader_note(grader, "shape check")
    passed = []
    for name, x in cases:
        out, problem = call_get_features(model, x.to(device))
        if problem:
            report.failed(name, problem[0] + note, problem[1])
            return False
        passed.append((name, f"shape {tuple(out.shape)}, finite, values in [{float(out.min()):.3g}, "
                             f"{float(out.max()):.3g}]"))
    if note:
        report.failed(SHAPE_CHECK, grader.step_text(), "make get_features depend on nothing but the model and its "
                      "input")
        return False
    for name, message in passed:
        report.passed(name, message)
    return True


def call_get_features(model, x: torch.Tensor):
    """(model.get_features(x), None) when it gives finite (B, 1000) floats, else (None, (what is wrong, the fix))."""
    expected = (x.shape[0], COURSE_CLASS_VARIABLES["feature_dim"])
    try:
        with torch.no_grad():
            out = model.get_features(x)
    except Exception as error:
        return None, (f"model.get_features on a {tuple(x.shape)} {x.dtype} input on {x.device} raised "
                      f"{type(error).__name__}: {str(error)[:300]}",
                      "get_features must accept (B, 3, 64, 64) float images in [0, 1] on the model's device")
    if not isinstance(out, torch.Tensor):
        return None, (f"get_features returned a {type(out).__name__}, expected a tensor of shape {expected}",
                      "return only the features tensor from get_features (forward may return more)")
    if tuple(out.shape) != expected:
        return None, (f"get_features returned shape {tuple(out.shape)}, expected {expected}",
                      "return (B, 1000) features: keep feature_dim = 1000 and flatten the pooled features")
    if not out.is_floating_point():
        return None, (f"get_features returned dtype {out.dtype}, expected floating point", "return float features")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        return None, (f"{bad} of {out.numel()} feature values are NaN or infinite (expected finite values)",
                      "look for a division by zero, log of 0 or sqrt of a negative number in get_features, or "
                      "NaN weights from a diverged training run")
    return out, None
