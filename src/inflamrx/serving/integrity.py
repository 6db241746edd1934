"""The SHA-256 manifest of a logged model: recorded when it is logged, checked before any of
its code is imported.

A model folder is code: ``inflamrx_model.py`` and the package under ``code/`` run when MLflow
loads it, and its MLmodel file says how to load it (a pickled ``python_model`` or another
flavour would unpickle). So ``predict``, ``explain``, ``serve`` and ``export`` first copy the
model to a folder of their own, hash every file of the copy and compare with the manifest
recorded at logging time; a changed, added or missing file is refused naming the file, and only
the verified copy is ever loaded or served (so nothing is written into the stored model).

Where the trusted manifest lives (``MANIFEST_TAG``, JSON ``{path: sha256}``):
- ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS``: a tag of that registered model version;
- ``models:/m-ID`` and ``runs:/RUN_ID/PATH``: a tag of the logged model (run tags are cut at
  8,000 characters, too short for the manifest);
- an exported folder: the file ``MANIFEST_FILE`` beside its MLmodel. That file travels with the
  folder, so it detects files changed after export, not a folder rewritten as a whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import yaml

from inflamrx.errors import InputError
from inflamrx.tracking.store import use_store

MANIFEST_TAG = "inflamrx.manifest"
MANIFEST_FILE = "inflamrx-manifest.json"
# model_config key by which a loader says "these artifacts are a verified copy" (in-process:
# mlflow.pyfunc.load_model(model_config=...); served: MLflow's SERVING_MODEL_CONFIG variable).
VERIFIED_KEY = "inflamrx_verified_copy"
# MLflow rewrites this file (the registry name and version, YAML) on every registry download
# and never reads it: it is left out of the manifest and deleted from verified copies.
REGISTRY_NOTE = "registered_model_meta"
PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"  # MLflow 3.17 defaults it to true
# The only way inflamrx models are loaded: MLflow's models-from-code loader, no pickle.
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
_REGISTRY_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_LOGGED_URI = re.compile(r"models:/(?P<id>m-[0-9a-f]+)/?$")
_RUN_URI = re.compile(r"runs:/(?P<run>[0-9a-f]+)/(?P<path>[^/]+)/?$")


class IntegrityError(InputError):
    """A model's files do not match its manifest, or it has no manifest: nothing was loaded."""


def file_manifest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (POSIX relative paths), the manifest file aside."""
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in (MANIFEST_FILE, REGISTRY_NOTE):
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _encode(manifest: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(manifest.items())), separators=(",", ":"))


def _decode(text: str, where: str) -> dict[str, str]:
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
    ):
        raise IntegrityError(f"the integrity manifest of {where} is not a JSON object of hashes")
    return manifest


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(use_store())


def _local_folder(model_uri: str) -> Path | None:
    path = Path(model_uri.removeprefix("file://"))
    return path if "://" not in model_uri.removeprefix("file://") and path.is_dir() else None


def _logged_model_of_run(client: mlflow.MlflowClient, run_id: str, name: str) -> str:
    run = client.get_run(run_id)
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
    )
    if not found:
        raise IntegrityError(f"run {run_id} logged no model named {name!r}")
    return str(found[0].model_id)


def _manifest_holder(model_uri: str) -> tuple[str, tuple[str, ...]]:
    """Which entity holds the manifest of ``model_uri``: ("version", (name, version)) or
    ("logged", (model_id,))."""
    client = _client()
    try:
        if m := _REGISTRY_URI.match(model_uri):
            name, version = m["name"], m["version"]
            if version is None:
                version = client.get_model_version_by_alias(name, m["alias"]).version
            return "version", (name, str(version))
        if m := _LOGGED_URI.match(model_uri):
            return "logged", (m["id"],)
        if m := _RUN_URI.match(model_uri):
            return "logged", (_logged_model_of_run(client, m["run"], m["path"]),)
    except IntegrityError:
        raise
    except Exception as err:  # an unknown name, version, alias, run or model id
        raise IntegrityError(f"cannot find the model {model_uri!r}: {err}") from None
    raise IntegrityError(
        f"cannot verify the model {model_uri!r}: use models:/NAME/VERSION, models:/NAME@ALIAS, "
        "models:/m-ID, runs:/RUN_ID/model or an exported folder"
    )


def _recorded(model_uri: str) -> tuple[dict[str, str] | None, str]:
    """The manifest recorded for ``model_uri`` (None when it has none: models of 0.1.0), and
    the URI to download the very files it describes (an alias resolved to its version once)."""
    if (folder := _local_folder(model_uri)) is not None:
        file = folder / MANIFEST_FILE
        text = file.read_text(encoding="utf-8") if file.is_file() else None
        return (_decode(text, str(file)) if text is not None else None), model_uri
    holder, key = _manifest_holder(model_uri)
    client = _client()
    try:
        if holder == "version":
            tags = client.get_model_version(*key).tags
            model_uri = f"models:/{key[0]}/{key[1]}"
        else:
            tags = client.get_logged_model(key[0]).tags
    except Exception as err:  # an unknown name, version or model id
        raise IntegrityError(f"cannot find the model {model_uri!r}: {err}") from None
    text = (tags or {}).get(MANIFEST_TAG)
    return (_decode(text, model_uri) if text is not None else None), model_uri


def _mismatch(expected: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    changed = [
        f"{p} was changed" for p in sorted(expected) if p in found and found[p] != expected[p]
    ]
    added = [f"{p} was added" for p in sorted(set(found) - set(expected))]
    missing = [f"{p} is missing" for p in sorted(set(expected) - set(found))]
    return changed + added + missing


def check_model_files(folder: Path) -> None:
    """Refuse a model whose MLmodel would load anything but inflamrx's models-from-code pyfunc
    (a pickled ``python_model``, or another flavour, such as sklearn's, that unpickles)."""
    try:
        flavors = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))["flavors"]
        pyfunc = flavors["python_function"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise IntegrityError(f"{folder.name}: MLmodel is missing or not an MLflow pyfunc") from None
    others = sorted(set(flavors) - {"python_function"})
    if others:
        raise IntegrityError(
            f"MLmodel declares the flavour(s) {others}: an inflamrx model is a pyfunc from code "
            "only, and another flavour may load a pickle"
        )
    if pyfunc.get("loader_module") != CODE_LOADER or "python_model" in pyfunc:
        raise IntegrityError(
            "MLmodel: the model is not loaded from code (a pickled python_model?); inflamrx "
            "never unpickles a model"
        )


def _no_manifest(model_uri: str) -> IntegrityError:
    return IntegrityError(
        f"the model {model_uri!r} has no integrity manifest (it was logged or exported before "
        "inflamrx recorded one, e.g. by release 0.1.0); if you trust where it came from, record "
        f"one with `inflamrx trust-model --model {model_uri}`, then run this command again"
    )


def _fetch(model_uri: str, dest: Path) -> Path:
    folder = _local_folder(model_uri)
    if folder is not None:
        return Path(shutil.copytree(folder, dest / "model", symlinks=True))
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    except Exception as err:
        raise IntegrityError(f"cannot download the model {model_uri!r}: {err}") from None


def verify_model(model_uri: str, dest: Path) -> Path:
    """Copy the model behind ``model_uri`` into ``dest`` and check the copy against its
    recorded manifest; return the copy's folder (holding ``MANIFEST_FILE``), the only thing to
    load or serve. Nothing of the model is imported here."""
    use_store()
    expected, files_uri = _recorded(model_uri)
    if expected is None:
        raise _no_manifest(model_uri)
    local = _fetch(files_uri, dest)
    (local / REGISTRY_NOTE).unlink(missing_ok=True)
    if any(p.is_symlink() for p in local.rglob("*")):
        raise IntegrityError(f"the model {model_uri!r} holds a symbolic link; refusing to load it")
    wrong = _mismatch(expected, file_manifest(local))
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise IntegrityError(
            f"model file {wrong[0]}{more} since its SHA-256 manifest was recorded; refusing to "
            f"load {model_uri!r}"
        )
    check_model_files(local)
    (local / MANIFEST_FILE).write_text(_encode(expected), encoding="utf-8")
    return local


def record_manifest(model_uri: str, model_id: str, registered: tuple[str, str] | None) -> None:
    """Hash the files of a just-logged model; tag its logged model (and its registered
    version) with the manifest."""
    client = _client()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        manifest = _encode(file_manifest(local))
    client.set_logged_model_tags(model_id, {MANIFEST_TAG: manifest})
    if registered is not None:
        client.set_model_version_tag(*registered, MANIFEST_TAG, manifest)


def trust_model(model_uri: str) -> str:
    """Record a manifest for a model that has none (0.1.0), after the structural check; return
    where it was recorded. A model that already has one is never re-hashed."""
    use_store()
    if _recorded(model_uri)[0] is not None:
        raise IntegrityError(f"the model {model_uri!r} already has an integrity manifest")
    with tempfile.TemporaryDirectory() as tmp:
        local = _fetch(model_uri, Path(tmp))
        check_model_files(local)
        manifest = _encode(file_manifest(local))
    if (folder := _local_folder(model_uri)) is not None:
        (folder / MANIFEST_FILE).write_text(manifest, encoding="utf-8")
        return str(folder / MANIFEST_FILE)
    holder, key = _manifest_holder(model_uri)
    if holder == "version":
        _client().set_model_version_tag(key[0], key[1], MANIFEST_TAG, manifest)
        return f"tag {MANIFEST_TAG} of model version {key[0]}/{key[1]}"
    _client().set_logged_model_tags(key[0], {MANIFEST_TAG: manifest})
    return f"tag {MANIFEST_TAG} of logged model {key[0]}"


def verified_config(folder: Path) -> dict[str, str]:
    """The model_config that tells ``ResponseModel.load_context`` its files were verified.
    MLflow passes a loader's model_config only for keys logged with the model: ``log_model``
    logs ``{VERIFIED_KEY: ""}`` (not verified)."""
    return {VERIFIED_KEY: str(folder.resolve())}


def is_verified(model_config: Mapping[str, Any] | None, artifacts: Mapping[str, str]) -> bool:
    """True when every artifact lies in the folder ``verify_model`` checked."""
    root = (model_config or {}).get(VERIFIED_KEY)
    if not root or not artifacts:
        return False
    base = Path(str(root)).resolve()
    return all(Path(p).resolve().is_relative_to(base) for p in artifacts.values())


def serving_env(folder: Path) -> dict[str, str]:
    """Environment of a process serving the verified copy ``folder``: no pickle, no
    ``__pycache__`` written, and the verified-copy marker for ``load_context``."""
    return {
        PICKLE_SWITCH: "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SERVING_MODEL_CONFIG": json.dumps(verified_config(folder)),
    }


@contextmanager
def no_bytecode() -> Iterator[None]:
    """No ``__pycache__`` written while a model folder's code is imported in this process."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


@contextmanager
def pickles_refused() -> Iterator[None]:
    """MLflow's pickle deserialisation off while a model loads in this process."""
    before = os.environ.get(PICKLE_SWITCH)
    os.environ[PICKLE_SWITCH] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PICKLE_SWITCH, None)
        else:
            os.environ[PICKLE_SWITCH] = before
