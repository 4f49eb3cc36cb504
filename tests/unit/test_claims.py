"""Names true of their members: grid names only where 70% of the members are in the cell, otherwise
names from the claims that hold, unique within a model, with their purity."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.model.claims import TRUE_OF, name_segments, persona_of, true_share
from tasks.model.step import one_id_per_name


def members(rows: list[tuple[int, int, int, int, int, float]], repeat: int = 1) -> pd.DataFrame:
    """Scored customers: (r_score, f_score, m_score, frequency, tenure_days, monetary), each ``repeat`` times."""
    columns = ["r_score", "f_score", "m_score", "frequency", "tenure_days", "monetary"]
    return pd.DataFrame(rows * repeat, columns=columns)


def test_a_grid_name_goes_to_a_segment_whose_members_are_in_its_cell() -> None:
    champions = members([(5, 5, 5, 20, 400, 900.0)] * 9 + [(4, 3, 4, 6, 300, 400.0)], repeat=3)

    (name,) = name_segments([champions])

    assert name.name == "Champions" and name.claims == ("grid:Champions",)
    assert name.purity == 0.9


def test_a_segment_no_grid_name_fits_is_named_by_the_claims_true_of_it() -> None:
    # lapsed repeat buyers spread over three cells of the grid (At Risk, Hibernating, Lost): no cell
    # holds 70% of them, but all of them lapsed and bought more than once
    lapsed = members(
        [(1, 3, 3, 3, 500, 150.0), (2, 3, 2, 3, 450, 80.0), (1, 2, 1, 2, 600, 30.0), (2, 5, 4, 12, 700, 800.0)],
        repeat=5,
    )

    (name,) = name_segments([lapsed])

    assert name.name == "Lapsed repeat buyers"
    assert name.claims == ("recency:lapsed", "frequency:repeat")
    assert name.purity == 1.0 == true_share(lapsed, name.claims)
    persona = persona_of(name, lapsed)
    assert "100% have not bought for long" in persona.description and "Win them back" in persona.recommended_action


def test_a_name_states_only_what_holds_for_seventy_percent() -> None:
    # recent, 80% one-time buyers, 60% high spenders (in the grid: Promising, Recent, Potential
    # Loyalists, none at 70%): the spending claim is left out
    mixed = members(
        [(4, 1, 5, 1, 200, 500.0)] * 3
        + [(5, 1, 5, 1, 200, 500.0)] * 3
        + [(5, 1, 2, 1, 200, 20.0)] * 2
        + [(5, 3, 2, 2, 200, 40.0)] * 2
    )

    (name,) = name_segments([mixed])

    assert name.name == "Recent one-time buyers" and name.purity == 0.8 >= TRUE_OF


def test_segments_with_the_same_claims_are_told_apart_by_the_next_true_claim() -> None:
    # recent one-time low spenders, half in the grid's Recent cell, half in Promising
    newcomers = members([(5, 1, 2, 1, 20, 25.0), (4, 1, 2, 1, 20, 25.0)], repeat=5)  # first order within 90 days
    seasoned = members([(5, 1, 2, 1, 400, 25.0), (4, 1, 2, 1, 400, 25.0)], repeat=5)

    first, second = name_segments([newcomers, seasoned])

    assert first.name == "New recent low-spending one-time buyers"
    assert second.name == "Recent low-spending one-time buyers"
    assert first.purity == second.purity == 1.0


def test_segments_alike_in_every_claim_are_one_segment_under_one_name() -> None:
    # lapsed one-time mid spenders, half in the grid's Lost cell, half in Hibernating: no claim tells
    # them apart (their spend differs, but not by a tier), so neither gets a made-up comparative
    bigger = members([(1, 1, 3, 1, 400, 90.0), (2, 1, 3, 1, 400, 90.0)], repeat=5)
    smaller = members([(1, 1, 3, 1, 400, 60.0), (2, 1, 3, 1, 400, 60.0)], repeat=5)

    names = name_segments([bigger, smaller])

    assert names[0].name == names[1].name == "Lapsed one-time buyers"
    assert one_id_per_name((4, 7), names) == (4, 4)
    assert not any(word in names[0].name.lower() for word in ("higher", "lower", "("))


def test_segments_alike_but_for_their_spend_tier_are_told_apart_by_it() -> None:
    # today's CDNOW-like output named these "Higher-spending recent high-spending frequent buyers" and
    # "Lower-spending recent high-spending frequent buyers": recent frequent buyers beside a purer
    # Champions segment, one mostly in the top spend quintile, the other mostly in the fourth
    champions = members([(5, 5, 5, 20, 400, 900.0)] * 10)
    top = members([(5, 5, 5, 20, 400, 900.0)] * 6 + [(4, 4, 5, 12, 400, 800.0)] + [(3, 5, 5, 15, 400, 700.0)] * 3)
    fourth = members([(5, 5, 4, 20, 400, 400.0)] * 6 + [(4, 4, 4, 12, 400, 300.0)] + [(3, 5, 4, 15, 400, 250.0)] * 3)

    names = name_segments([champions, top, fourth])

    assert [name.name for name in names] == [
        "Champions",
        "Recent top-spending frequent buyers",
        "Recent high-spending frequent buyers",
    ]
    assert all(name.purity is not None and name.purity >= TRUE_OF for name in names)


@pytest.mark.parametrize(
    "name",
    [
        "Higher-spending recent high-spending frequent buyers",
        "Lower-spending recent high-spending frequent buyers",
        "Recent top-spending frequent buyers",
        "New long-lapsed low-spending one-time buyers",
    ],
)
def test_what_a_name_may_say(name: str) -> None:
    problems = name_problems(name)
    if name.startswith(("Higher", "Lower")):
        assert problems  # a word twice, spending stated twice, a contradiction, five words before "buyers"
    else:
        assert problems == []


def name_problems(name: str) -> list[str]:
    """What a marketer would object to in a name: a word twice, an aspect twice, a contradiction, more
    than four words before "buyers"."""
    words = name.lower().split()
    problems = []
    if len(set(words)) < len(words) or len({word.split("-")[-1] for word in words}) < len(words):
        problems.append("a word twice")
    tiers = [word for word in words if word.endswith("-spending")]
    if len(tiers) > 1:
        problems.append("spending stated twice" + (" and contradicted" if len(set(tiers)) > 1 else ""))
    if words[-1] == "buyers" and len(words) - 1 > 4:
        problems.append("more than four words before buyers")
    return problems


def test_two_segments_in_one_cell_share_it_never_and_the_purer_keeps_the_grid_name() -> None:
    purer = members([(5, 5, 5, 20, 400, 900.0)] * 10)
    looser = members([(5, 5, 5, 20, 400, 900.0)] * 8 + [(3, 5, 5, 15, 400, 700.0)] * 2)

    names = name_segments([looser, purer])

    assert names[1].name == "Champions"
    assert names[0].name != "Champions" and names[0].purity is not None and names[0].purity >= TRUE_OF


def test_a_refit_keeps_a_matched_segments_name_while_it_is_still_true() -> None:
    lapsed = members([(1, 3, 3, 3, 500, 150.0), (2, 3, 2, 3, 450, 80.0)], repeat=5)
    became_recent = members([(5, 3, 3, 3, 500, 150.0)], repeat=10)
    kept_claims = ("recency:lapsed", "frequency:repeat")

    kept, renamed = name_segments([lapsed, became_recent], keep={0: kept_claims, 1: kept_claims})

    assert kept.name == "Lapsed repeat buyers" and kept.claims == kept_claims
    assert renamed.name != "Lapsed repeat buyers" and "recency:lapsed" not in renamed.claims
