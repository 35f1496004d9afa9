"""Which version answers which rows of one request, and which rows the other version scores after.

A pure plan, made before any scoring from the row ids, the traffic split and whether the
challenger is loaded. During a rollout every row is scored by both versions: the one that answers
it, and the other after the answer is sent (arm ``shadow``), so the rollout compares them on the
same live rows. A row goes to the challenger when the split says so (sticky by id, see
``Split.answers``) and the challenger is loaded; if the challenger then fails on its rows, the
champion answers them too (``challenger_failed``) and the failure is the challenger's evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctrain.serving.traffic import Split


@dataclass(frozen=True)
class Arms:
    """Row positions of one request per answering version."""

    champion: tuple[int, ...]  # rows the champion answers
    challenger: tuple[int, ...] = ()  # rows the challenger answers
    failed: tuple[int, ...] = ()  # rows the challenger was asked and failed on
    rollout: bool = False  # a rollout holds traffic: both versions score every row

    def challenger_failed(self) -> Arms:
        """The plan once the challenger failed on its rows: the champion answers every row, and
        the failed rows are not scored by the challenger again."""
        everything = tuple(sorted(self.champion + self.challenger))
        return Arms(everything, (), self.challenger, self.rollout)

    def champion_shadow(self) -> tuple[int, ...]:
        """Rows the champion scores after the answer: those the challenger answered."""
        return self.challenger if self.rollout else ()

    def challenger_shadow(self) -> tuple[int, ...]:
        """Rows the challenger scores after the answer: those the champion answered, but for
        the rows it already failed on (logged once)."""
        if not self.rollout:
            return ()
        return tuple(i for i in self.champion if i not in self.failed)


def plan_arms(ids: Sequence[str], split: Split, challenger_loaded: bool) -> Arms:
    """The plan for rows with these ids under ``split``."""
    everything = tuple(range(len(ids)))
    if not split.active:
        return Arms(everything)
    if not challenger_loaded:  # still loading, or failed to: the champion answers meanwhile
        return Arms(everything, rollout=True)
    to_challenger = [split.answers(i) for i in ids]
    return Arms(
        champion=tuple(i for i, c in enumerate(to_challenger) if not c),
        challenger=tuple(i for i, c in enumerate(to_challenger) if c),
        rollout=True,
    )
