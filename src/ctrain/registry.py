"""The registered model: its aliases, who is champion, and the one place that loads a model.

Training registers versions, promotion moves ``champion``, scoring, the monitor and the
comparison read it; they all name the aliases and load models through here.

Loading is safe by construction: a model is read only if it is stored in ctrain's own format
(scikit-learn, serialized with skops) and holds only the types in ``TRUSTED_TYPES``, a list
ctrain defines; the trusted-types list an artifact carries in its own ``MLmodel`` file is never
read. Pickle and cloudpickle artifacts are refused without being opened: unpickling runs
whatever the file says. MLflow's own loader is not used (it trusts the artifact's list), and
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is false in every process ctrain configures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
# The only serialization ctrain writes or reads.
FORMAT = "skops"
# Set on a training run by ctrain's own registration: the one version of the registered model that
# is this run's. Anyone may register a run's model again (same run, same source, any tags); such a
# version is not ctrain's, and this tag is how a version entry, not its artifact, says so.
REGISTERED_VERSION = "ctrain_registered_version"

# The types a fitted ctrain model may hold beyond skops' own defaults: ctrain's preprocessing
# and the estimators training allows, fitted. tests/unit/test_safe_loading.py fits every allowed
# estimator and checks that this list is exactly what they need, so it cannot drift.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)


class UnsafeModel(Exception):
    """A model ctrain refuses to load; the message says which and why. Nothing was executed."""


def aliased_version(client, name: str, alias: str):
    """The ``ModelVersion`` that ``alias`` points at, or None when the alias (or model) is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def ensure_registered_model(client, name: str) -> None:
    """Create the registered model ``name`` unless it exists (another process may race us)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            name, description="Managed by ctrain: aliases champion and challenger."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def registered_version_of(client, name: str, run) -> str | None:
    """The version ctrain's training registered from ``run``: the one its tag names, or for a run
    registered before the tag existed, the first version made from it (ctrain registers a run
    as soon as it is trained, so a later one is someone else's). None when it has none."""
    named = run.data.tags.get(REGISTERED_VERSION)
    if named:
        return named
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    return str(min(int(v.version) for v in found)) if found else None


def current_champion(client, name: str) -> str | None:
    """The version ``champion`` points at right now, or None."""
    mv = aliased_version(client, name, CHAMPION)
    return None if mv is None else str(mv.version)


def training_window(client, name: str, version: str, datasets_dir: Path) -> Path | None:
    """The folder of the rows ``version`` was trained on (its ``data_content_hash`` tag under
    ``datasets_dir``), or None when it names none that exists."""
    data_hash = client.get_model_version(name, version).tags.get("data_content_hash")
    folder = Path(datasets_dir) / str(data_hash)
    return folder if data_hash and (folder / "meta.json").is_file() else None


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def load_model_and_signature(uri: str) -> tuple[Any, Any]:
    """``load_model`` and the model's signature (None if it has none), from one download.

    The signature is read from the downloaded ``MLmodel``, not by MLflow's ``get_model_info``,
    which looks up the logged model its ``MLmodel`` names in this store: a version carried in
    from another environment names the source's logged model there.
    """
    from mlflow.models import Model

    folder = download_model(uri)
    return _load_local(folder, uri), Model.load(str(folder)).signature


def load_model(uri: str) -> Any:
    """Load the scikit-learn model at ``uri`` (``models:/name/version``, ``models:/m-...``).

    Raises:
        UnsafeModel: the artifact is not ctrain's format or holds a type ctrain does not trust.
    """
    return _load_local(download_model(uri), uri)


def check_model(uri: str, tracking_uri: str | None = None, sha256: str | None = None) -> str:
    """Raise ``UnsafeModel`` unless the model at ``uri`` (in the store at ``tracking_uri``;
    the process's by default) would load safely; it is not loaded. With ``sha256``, its files
    must also be those that hash to it. Returns the hash of its files (``manifest_digest``)."""
    folder = download_model(uri, tracking_uri)
    check_folder(folder, uri)
    now = manifest_digest(manifest(folder))
    if sha256 and now != sha256:
        raise UnsafeModel(f"{uri}: its files hash to {now[:12]}, not {sha256[:12]} as verified")
    return now


def check_folder(folder: Path, uri: str) -> None:
    """``check_model`` of a model already downloaded into ``folder`` (from ``uri``)."""
    _skops_file(folder, uri)


# Written by MLflow into a registered version's download (it names the version and store), so
# never part of a model's bytes.
DOWNLOAD_NOTE = "registered_model_meta"


def manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file of the model downloaded into ``folder``, by its relative path."""
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != DOWNLOAD_NOTE
    }


def manifest_digest(files: dict[str, str]) -> str:
    """One sha256 for a manifest: of its entries, sorted."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def download_model(uri: str, tracking_uri: str | None = None, dst: Path | None = None) -> Path:
    """Download the model at ``uri`` from the store at ``tracking_uri`` (the process's when
    None) into ``dst`` (a temporary folder when None); returns the folder.

    A ``models:/`` URI is resolved here, in that store: MLflow's downloader resolves it in the
    process's registry whatever ``registry_uri`` it is given (``ModelsArtifactRepository.
    _get_model_uri_infos``), so a target's worker asking for ``models:/m/1`` of another
    environment would get its own version 1 of a model of the same name.
    """
    import mlflow
    from mlflow import MlflowClient

    where = uri
    if uri.startswith("models:/"):
        client = MlflowClient(tracking_uri, tracking_uri)
        rest = uri.removeprefix("models:/").rstrip("/")
        if "/" in rest:
            name, version = rest.split("/", 1)
            where = client.get_model_version_download_uri(name, version)
        elif "@" in rest:
            name, alias = rest.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
            where = client.get_model_version_download_uri(name, version)
        else:
            where = client.get_logged_model(rest).artifact_location
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=where,
            dst_path=None if dst is None else str(dst),
            tracking_uri=tracking_uri,
        )
    )


def _skops_file(folder: Path, uri: str) -> tuple[Path, list[str]]:
    """The model's skops file and its types beyond skops' defaults, after every check."""
    import skops.io
    import yaml

    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise UnsafeModel(f"{uri}: no MLmodel file: not an MLflow model")
    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {})
    sk = flavor.get("sklearn")
    if not isinstance(sk, dict):
        raise UnsafeModel(f"{uri}: not a scikit-learn model (flavors: {sorted(flavor)})")
    fmt = sk.get("serialization_format")
    if fmt != FORMAT:
        raise UnsafeModel(
            f"{uri}: stored as {fmt!r}; ctrain loads only {FORMAT!r} models "
            "(unpickling a model file runs whatever code it holds)"
        )
    name = str(sk.get("pickled_model", ""))
    path = (folder / name).resolve()
    if not name or Path(name).name != name or not path.is_file():
        raise UnsafeModel(f"{uri}: model file {name!r} is not a file inside the model folder")
    try:
        needed = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises several types for a malformed file
        raise UnsafeModel(f"{uri}: not a readable skops file: {str(exc)[:200]}") from exc
    untrusted = sorted(set(needed) - set(TRUSTED_TYPES))
    if untrusted:
        raise UnsafeModel(
            f"{uri}: holds types outside ctrain's trusted list: {', '.join(untrusted[:5])}"
            + (f" and {len(untrusted) - 5} more" if len(untrusted) > 5 else "")
        )
    return path, needed


def _load_local(folder: Path, uri: str) -> Any:
    import skops.io

    path, needed = _skops_file(folder, uri)
    return skops.io.load(path, trusted=needed)


def as_pyfunc(model: Any, uri: str) -> Any:
    """``model`` (loaded from ``uri`` by ``load_model``) as an ``mlflow.pyfunc.PyFuncModel``, for
    ``mlflow.models.evaluate``, which would otherwise load the artifact with MLflow's loader."""
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

    return PyFuncModel(model_meta=Model.load(uri), model_impl=_Raw(model))


class _Raw:
    """The pyfunc face of a loaded scikit-learn model; evaluate reaches the estimator through
    ``get_raw_model`` (for ``predict_proba``)."""

    def __init__(self, model: Any):
        self.model = model

    def get_raw_model(self) -> Any:
        return self.model

    def predict(self, data, params=None):
        return self.model.predict(data)
