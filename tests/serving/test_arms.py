"""The plan of which version answers which rows of a request (``serving/arms.py``): pure."""

from ctrain.serving.arms import Arms, plan_arms
from ctrain.serving.traffic import RUNNING, Split

IDS = [f"row-{k}" for k in range(400)]


def _split(percent, strategy="canary", status=RUNNING):
    return Split(
        rollout_id="v2-abc", strategy=strategy, champion="1", challenger="2", percent=percent,
        status=status,
    )  # fmt: skip


def test_without_a_rollout_the_champion_answers_everything_and_nothing_is_shadowed():
    for split in (Split(), _split(50, status="promoted")):
        plan = plan_arms(IDS, split, challenger_loaded=True)
        assert plan == Arms(tuple(range(len(IDS))))
        assert plan.champion_shadow() == plan.challenger_shadow() == ()


def test_the_split_decides_each_row_and_the_other_version_scores_it_after():
    split = _split(25)
    plan = plan_arms(IDS, split, challenger_loaded=True)
    assert set(plan.champion) | set(plan.challenger) == set(range(len(IDS)))
    assert not set(plan.champion) & set(plan.challenger)
    assert [IDS[i] for i in plan.challenger] == [i for i in IDS if split.answers(i)]
    assert 60 < len(plan.challenger) < 140  # about a quarter of 400
    assert plan.champion_shadow() == plan.challenger
    assert plan.challenger_shadow() == plan.champion
    # Sticky: a row the challenger answered at 25 % it still answers at 50 %.
    wider = plan_arms(IDS, _split(50), challenger_loaded=True)
    assert set(plan.challenger) < set(wider.challenger)


def test_a_challenger_not_loaded_answers_nothing_but_is_asked_to_shadow_everything():
    plan = plan_arms(IDS, _split(50), challenger_loaded=False)
    assert plan.champion == tuple(range(len(IDS))) and plan.challenger == ()
    assert plan.challenger_shadow() == plan.champion and plan.champion_shadow() == ()


def test_rows_the_challenger_failed_on_are_answered_by_the_champion_and_not_retried():
    plan = plan_arms(IDS, _split(50), challenger_loaded=True)
    failed = plan.challenger_failed()
    assert failed.champion == tuple(range(len(IDS))) and failed.challenger == ()
    assert failed.failed == plan.challenger
    assert failed.champion_shadow() == ()
    assert failed.challenger_shadow() == plan.champion  # only the rows it was not asked yet


def test_shadow_strategy_sends_no_answer_to_the_challenger():
    plan = plan_arms(IDS, _split(0, strategy="shadow"), challenger_loaded=True)
    assert plan.challenger == () and plan.challenger_shadow() == tuple(range(len(IDS)))
