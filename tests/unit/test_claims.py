"""Names true of their members: grid names only where 70% of the members are in the cell, otherwise
names from the claims that hold, unique within a model, with their purity."""

from __future__ import annotations

import pandas as pd

from tasks.model.claims import TRUE_OF, name_segments, persona_of, true_share


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


def test_segments_alike_in_every_claim_are_told_apart_by_their_spend_never_by_a_number() -> None:
    # lapsed one-time buyers, half in the grid's Lost cell, half in Hibernating
    bigger = members([(1, 1, 3, 1, 400, 90.0), (2, 1, 3, 1, 400, 90.0)], repeat=5)
    smaller = members([(1, 1, 3, 1, 400, 60.0), (2, 1, 3, 1, 400, 60.0)], repeat=5)

    names = name_segments([bigger, smaller])

    assert [name.name for name in names] == [
        "Higher-spending lapsed one-time buyers",
        "Lower-spending lapsed one-time buyers",
    ]
    assert not any("(" in name.name for name in names)


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
