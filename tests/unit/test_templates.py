"""The suite's templates: a copied home must be what running the steps there would have made.

Most tests start from a bootstrapped champion (``tests_support.bootstrap_champion``); after the
first, each gets a copy of a template home with its paths moved. These checks keep that copy
honest: nothing in it names the template, the registry and the files read the same, and the
copy works with the template gone.
"""

import shutil
import sqlite3
from contextlib import closing

from tests_support import bootstrap_champion, clone_home, run_bootstrap

from ctrain.data.demo_source import DemoSource
from ctrain.registry import current_champion, load_model, version_uri
from ctrain.tracking import configure


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_cloned_home_names_only_itself_and_works_without_its_template(make_settings, tmp_path):
    settings = make_settings(dataset={"labels": "delayed"})
    src = DemoSource(**settings.demo.model_dump())
    template = tmp_path / "template" / "ctrain"
    made = settings.model_copy(update={"home": template})
    run_bootstrap(made, src)  # for real, there
    assert current_champion(configure(made), made.model_name) == "1"

    clone_home(template, settings.root)
    shutil.rmtree(template)
    assert not template.exists()
    old = str(template).encode()
    for path in settings.root.rglob("*"):
        assert not path.is_file() or old not in path.read_bytes(), path
    with closing(sqlite3.connect(settings.mlflow_dir / "mlflow.db")) as db:
        locations = [r[0] for r in db.execute("select artifact_location from experiments")]
    assert any(str(settings.root) in loc for loc in locations), locations

    client = configure(settings)
    assert current_champion(client, settings.model_name) == "1"
    mv = client.get_model_version_by_alias(settings.model_name, "champion")
    assert mv.tags["validation_status"] == "passed"
    model = load_model(version_uri(settings.model_name, "1"))
    assert hasattr(model, "predict_proba")
    assert (settings.accepted_dir / "batch_0002.parquet").exists()


def test_a_second_bootstrap_of_the_same_project_is_the_template_copied(make_settings, tmp_path):
    first = make_settings(dataset={"labels": "delayed"})
    src = DemoSource(**first.demo.model_dump())
    bootstrap_champion(first, src)  # made once in a template, then copied here
    second = first.model_copy(update={"home": tmp_path / "second" / "ctrain"})
    bootstrap_champion(second, src)
    assert _files(first.root) == _files(second.root)
    runs = {}
    for s in (first, second):
        client = configure(s)
        mv = client.get_model_version_by_alias(s.model_name, "champion")
        runs[s.root] = (mv.version, mv.run_id, mv.tags["data_content_hash"])
    assert runs[first.root] == runs[second.root]  # the same records, each in its own store
