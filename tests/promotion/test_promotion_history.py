"""One true history: a record claims a move only if its call made it, whatever dies when.

Crashes are real: a promote runs in its own process with a real MLflow client that sends itself
SIGKILL right after a chosen call (the record opened, the intent written, the alias moved, the
record half closed). The next command that takes the promotion lock must leave the records and
the alias agreeing one to one.
"""

import threading
import time

import pytest
from tests_support import killed_at, trained_champion

from ctrain import cli
from ctrain.promotion.decisions import history, list_decisions, open_records
from ctrain.promotion.lock import promotion_lock
from ctrain.promotion.promote import PromotionRefused, manual_promote, reconcile, rollback
from ctrain.records import RunContext
from ctrain.registry import CHAMPION, current_champion


def assert_history_true(client, settings):
    """Records and alias agree: no open record, moves numbered 1..n, each starting where the
    previous one ended, the last ending where the alias is, and none a move to itself."""
    assert open_records(client, settings) == []
    moves = history(client, settings)
    assert [m.move for m in moves] == list(range(1, len(moves) + 1))
    for before, after in zip([None, *moves], moves, strict=False):
        assert after.champion_before == (before.champion_after if before else None), moves
        assert after.champion_after != after.champion_before
    assert (moves[-1].champion_after if moves else None) == current_champion(
        client, settings.model_name
    )
    return moves


def test_a_no_op_promote_is_no_move_and_rollback_goes_to_the_previous_champion(
    two_versions, client
):
    settings = two_versions
    first = manual_promote(settings, "2", RunContext(), client)
    again = manual_promote(settings, "2", RunContext(), client)
    assert first.moved and (first.champion_before, first.champion_after) == ("1", "2")
    assert not again.moved and again.rule == "already_champion"
    back = rollback(settings, RunContext(), client)
    assert (back.champion_before, back.champion_after) == ("2", "1")
    forth = rollback(settings, RunContext(), client)  # rolling back a rollback goes forward
    assert (forth.champion_before, forth.champion_after) == ("1", "2")
    moves = assert_history_true(client, settings)
    assert [m.champion_after for m in moves] == ["1", "2", "1", "2"]


def test_an_alias_moved_outside_ctrain_is_recorded_as_found(two_versions, client):
    settings = two_versions
    client.set_registered_model_alias(settings.model_name, CHAMPION, "2")  # by hand, in MLflow
    with promotion_lock(settings):
        (found,) = reconcile(settings, client)
    assert found.decision == "external" and (found.champion_before, found.champion_after) == (
        "1",
        "2",
    )
    assert rollback(settings, RunContext(), client).champion_after == "1"
    assert_history_true(client, settings)


_PROMOTE = """
from ctrain.promotion.promote import manual_promote
from ctrain.records import RunContext
from ctrain.settings import load_settings
from ctrain.tracking import configure

version, run_id = sys.argv[3], sys.argv[4]
settings = load_settings()
configure(settings)
client = dying_client(settings.resolved_tracking_uri)
manual_promote(settings, version, RunContext(run_id=run_id), client)
print("finished without being killed")
"""

# (client method, after how many calls): each point of a promote's life.
KILL_POINTS = [
    ("create_run", 1),  # the record opened, nothing else
    ("log_text", 1),  # the intent written, the alias not moved
    ("set_registered_model_alias", 1),  # the alias moved, the record still open
    ("set_model_version_tag", 1),  # moved and the version tagged
    ("log_text", 2),  # the record half closed (decision.json written)
]


def _killed_promote(method: str, after: int) -> None:
    """A promote of version 2 (run id ``killed``) that dies by SIGKILL after ``after`` calls of
    the client's ``method``."""
    killed_at(_PROMOTE, method, after, "2", "killed")


@pytest.mark.parametrize(("method", "after"), KILL_POINTS, ids=[f"{m}-{n}" for m, n in KILL_POINTS])
def test_a_promote_killed_at_any_point_is_reconciled_by_the_next_command(
    two_versions, client, method, after
):
    settings = two_versions
    _killed_promote(method, after)
    moved = current_champion(client, settings.model_name) == "2"
    # The next command that takes the lock: a promote of another kind (a rollback to 1 when
    # the killed move happened, else a promote of 2 by someone else).
    if moved:
        nxt = rollback(settings, RunContext(run_id="next"), client, to_version="1")
    else:
        nxt = manual_promote(settings, "2", RunContext(run_id="next"), client)
    assert nxt.moved
    moves = assert_history_true(client, settings)
    killed = [m for m in moves if m.airflow_run_id == "killed"]
    assert len(killed) == (1 if moved else 0)  # recorded as a move iff it moved
    # A retry of the killed command (same run id) never records a second move.
    retry = manual_promote(settings, "2", RunContext(run_id="killed"), client)
    assert retry.replayed or not retry.moved or not moved
    assert_history_true(client, settings)


def test_refused_manual_moves_are_recorded_and_are_not_moves(two_versions, client):
    settings = two_versions
    with pytest.raises(PromotionRefused, match="has no version 9"):
        manual_promote(settings, "9", RunContext(), client)
    assert list_decisions(client, settings, limit=1)[0].rule == "refused"
    assert_history_true(client, settings)


def test_a_rollback_that_waited_for_the_lock_follows_the_champion_it_finds(two_versions, client):
    """The champion moves while a rollback waits for the lock: it rolls back from the champion
    it finds there (before, it compared the champion read before waiting with the history read
    after, and said no earlier champion was on record)."""
    settings = two_versions
    out: dict = {}
    with promotion_lock(settings):
        waiting = threading.Thread(
            target=lambda: out.update(back=rollback(settings, RunContext(), client))
        )
        waiting.start()
        time.sleep(1)  # the rollback is past its start and waiting for the lock
        client.set_registered_model_alias(settings.model_name, CHAMPION, "2")
    waiting.join(120)
    assert (out["back"].champion_before, out["back"].champion_after) == ("2", "1")
    assert_history_true(client, settings)


def test_rollback_of_the_first_champion_says_so(settings, client):
    trained_champion(settings)
    with pytest.raises(PromotionRefused, match="version 1 is the first champion .* --to VERSION"):
        rollback(settings, RunContext(), client)


def test_status_after_a_killed_promote_prints_a_true_history(two_versions, client, capsys):
    """Killed after moving the alias, before closing its record: ``ctrain status`` closes the
    record as the move it was, so the champion and the newest move agree."""
    settings = two_versions
    _killed_promote("set_registered_model_alias", 1)
    assert len(open_records(client, settings)) == 1
    assert cli.main(["status"]) == 0
    out, err = capsys.readouterr()
    assert "reconciled: v2 promoted by hand 1→2" in err
    assert "champion  : version 2" in out and "UNFINISHED" not in out
    newest = out.split("newest first) for")[1].splitlines()[1]
    assert "1→2" in newest, out
    assert_history_true(client, settings)


def test_status_shows_a_move_under_way_as_unfinished(two_versions, client, capsys):
    """A move that holds the lock is not reconciled under it: status says it is unfinished, and
    once the lock is free the next status closes it (here: nothing moved)."""
    settings = two_versions
    _killed_promote("log_text", 1)  # its intent file written (not yet its tags), nothing moved
    with promotion_lock(settings):
        assert cli.main(["status"]) == 0
        out = capsys.readouterr().out
    assert "UNFINISHED: a move (target not yet recorded) (record " in out
    assert "champion  : version 1" in out
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "UNFINISHED" not in out and "champion  : version 1" in out
    assert_history_true(client, settings)
