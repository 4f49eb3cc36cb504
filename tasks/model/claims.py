"""Names true of their members. A segment takes a name of the RFM grid (Champions, Loyal, At Risk,
...) only when at least 70% of its members' own R/F/M scores fall in that cell; otherwise its name is
built from claims that hold for at least 70% of its members ("Lapsed repeat buyers", "Recent
high-spending one-time buyers"). Every name states recency or frequency, each aspect at most once
(so no word twice and no contradiction), in at most four words before its noun. Names are unique
within a model: told apart by the next claim true of them, then by a finer claim of one aspect that
differs between them (a spend tier: "top-spending" beside "high-spending"); segments that no claim
tells apart are one segment, under one name. A segment's purity is the share of its members of whom
its name is true.

A name is kept as its claims (``grid:Champions`` or ``recency:lapsed``, ``frequency:repeat``, ...), so
that its purity can be measured again on any night's members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.model.naming import PERSONAS, SegmentPersona, grid_cells

#: A name must be true of at least this share of the segment's members.
TRUE_OF = 0.7
NEW_CUSTOMER_DAYS = 90


@dataclass(frozen=True)
class Claim:
    """Something that can be true of a customer, and how it reads in a name."""

    key: str  # "aspect:word"
    adjective: str  # before the noun ("recent", "high-spending", "new")
    noun: str | None  # for frequency claims: what the customers are ("repeat buyers")
    description: str  # for the profile: what it means
    holds: Callable[[pd.DataFrame], pd.Series]

    @property
    def aspect(self) -> str:
        return self.key.split(":", 1)[0]


CLAIMS: dict[str, list[Claim]] = {  # per aspect, the most telling first
    "recency": [
        Claim("recency:recent", "recent", None, "bought recently (R 4-5)", lambda m: m["r_score"] >= 4),
        Claim("recency:lapsed", "lapsed", None, "have not bought for long (R 1-2)", lambda m: m["r_score"] <= 2),
        Claim("recency:active", "active", None, "bought not long ago (R 3-5)", lambda m: m["r_score"] >= 3),
        Claim("recency:lapsing", "lapsing", None, "have not bought lately (R 1-3)", lambda m: m["r_score"] <= 3),
    ],
    "frequency": [
        Claim("frequency:frequent", "frequent", "frequent buyers", "buy often (F 4-5)", lambda m: m["f_score"] >= 4),
        Claim("frequency:one-time", "one-time", "one-time buyers", "bought once", lambda m: m["frequency"] == 1),
        Claim("frequency:repeat", "repeat", "repeat buyers", "bought more than once", lambda m: m["frequency"] >= 2),
        Claim(
            "frequency:occasional",
            "occasional",
            "occasional buyers",
            "buy now and then (F 1-3)",
            lambda m: m["f_score"] <= 3,
        ),
    ],
    "monetary": [
        Claim("monetary:high", "high-spending", None, "spend the most (M 4-5)", lambda m: m["m_score"] >= 4),
        Claim("monetary:low", "low-spending", None, "spend little (M 1-2)", lambda m: m["m_score"] <= 2),
    ],
    "tenure": [
        Claim(
            "tenure:new",
            "new",
            None,
            f"first bought within {NEW_CUSTOMER_DAYS} days",
            lambda m: m["tenure_days"] <= NEW_CUSTOMER_DAYS,
        ),
    ],
}
#: Finer claims, stated only to tell apart segments whose names would otherwise be the same.
FINER_CLAIMS = [
    Claim("monetary:top", "top-spending", None, "spend the most of all (M 5)", lambda m: m["m_score"] == 5),
    Claim("monetary:lowest", "lowest-spending", None, "spend the least of all (M 1)", lambda m: m["m_score"] == 1),
    Claim(
        "monetary:mid", "mid-spending", None, "spend a middling amount (M 2-4)", lambda m: m["m_score"].between(2, 4)
    ),
    Claim("recency:long-lapsed", "long-lapsed", None, "have not bought for longest (R 1)", lambda m: m["r_score"] == 1),
    Claim(
        "tenure:long-standing", "long-standing", None, "first bought over a year ago", lambda m: m["tenure_days"] > 365
    ),
]
CLAIM_BY_KEY = {claim.key: claim for claim in [*(c for claims in CLAIMS.values() for c in claims), *FINER_CLAIMS]}
#: Per aspect, the claims that may tell segments apart, the narrowest first.
TELLING_APART = {
    "monetary": ["monetary:top", "monetary:lowest", "monetary:high", "monetary:low", "monetary:mid"],
    "recency": ["recency:long-lapsed", "recency:recent", "recency:lapsed", "recency:active", "recency:lapsing"],
    "frequency": ["frequency:one-time", "frequency:frequent", "frequency:repeat", "frequency:occasional"],
    "tenure": ["tenure:new", "tenure:long-standing"],
}
GRID = "grid:"


@dataclass(frozen=True)
class SegmentName:
    """A segment's name, the claims it makes (``("grid:Champions",)`` for a grid name), and its
    purity among the members it was measured on."""

    name: str
    claims: tuple[str, ...]
    purity: float | None


def true_share(members: pd.DataFrame, claims: Sequence[str]) -> float:
    """The share of ``members`` (scored customers) of whom every one of ``claims`` is true."""
    if not len(members):
        return 0.0
    holds = pd.Series(True, index=members.index)
    for key in claims:
        if key.startswith(GRID):
            holds &= grid_cells(members) == key.removeprefix(GRID)
        else:
            holds &= CLAIM_BY_KEY[key].holds(members).fillna(False).astype(bool)
    return float(holds.mean())


def claims_name(claims: Sequence[str]) -> str:
    """How claims read as a name: [New] [recency] [spending] noun, e.g. "Lapsed repeat buyers",
    "Recent high spenders"."""
    if claims and claims[0].startswith(GRID):
        return claims[0].removeprefix(GRID)
    chosen = {CLAIM_BY_KEY[key].aspect: CLAIM_BY_KEY[key] for key in claims}
    words = [chosen[aspect].adjective for aspect in ("tenure", "recency") if aspect in chosen]
    if "frequency" in chosen:
        if "monetary" in chosen:
            words.append(chosen["monetary"].adjective)
        words.append(str(chosen["frequency"].noun))
    elif "monetary" in chosen:
        words.append(chosen["monetary"].adjective.replace("-spending", " spenders"))
    else:
        words.append("customers")
    text = " ".join(words)
    return text[0].upper() + text[1:]


def ranked_claims(members: pd.DataFrame) -> list[str]:
    """The claims true of at least 70% of ``members`` together, one per aspect, in the order a name
    states them: recency, frequency, spending, tenure."""
    chosen: list[str] = []
    for aspect in ("recency", "frequency", "monetary", "tenure"):
        for claim in CLAIMS[aspect]:
            if true_share(members, [*chosen, claim.key]) >= TRUE_OF:
                chosen.append(claim.key)
                break
    if not any(key.split(":")[0] in ("recency", "frequency") for key in chosen):
        # nothing about recency or frequency holds for 70%: the most nearly true of them
        core = [claim for aspect in ("recency", "frequency") for claim in CLAIMS[aspect]]
        best = max(core, key=lambda claim: true_share(members, [claim.key]))
        chosen.insert(0, best.key)
    return chosen


def name_segments(
    members_of: Sequence[pd.DataFrame], keep: dict[int, tuple[str, ...]] | None = None
) -> list[SegmentName]:
    """Unique names for the clusters whose scored members are ``members_of`` (by cluster index).
    ``keep`` maps cluster indexes to the claims of a name they had before (a refit's matched
    segments): such a name stays where it is still true of 70% of the members."""
    keep = keep or {}
    names: dict[int, SegmentName] = {}
    for index, kept in keep.items():
        purity = true_share(members_of[index], kept)
        if purity >= TRUE_OF and claims_name(kept) not in {name.name for name in names.values()}:
            names[index] = SegmentName(claims_name(kept), kept, purity)
    # grid names first, each to the segment it is truest of
    grid_shares = []
    for index, members in enumerate(members_of):
        if index in names or not len(members):
            continue
        cells = grid_cells(members).value_counts(normalize=True)
        grid_shares.append((float(cells.iloc[0]), index, str(cells.index[0])))
    for share, index, cell in sorted(grid_shares, reverse=True):
        if share >= TRUE_OF and cell not in {name.name for name in names.values()}:
            names[index] = SegmentName(cell, (GRID + cell,), share)
    # the others by their claims, lengthened until they differ
    ranked = {index: ranked_claims(members) for index, members in enumerate(members_of) if index not in names}
    lengths = {index: _core_length(claims) for index, claims in ranked.items()}
    while True:
        proposed = {index: claims_name(claims[: lengths[index]]) for index, claims in ranked.items()}
        taken = [name.name for name in names.values()]
        every = taken + list(proposed.values())
        clashes = {index for index, name in proposed.items() if every.count(name) > 1}
        longer = {index for index in clashes if lengths[index] < len(ranked[index])}
        if not longer:
            break
        for index in longer:
            lengths[index] += 1
    for index, ranked_keys in ranked.items():
        stated = tuple(ranked_keys[: lengths[index]])
        names[index] = SegmentName(claims_name(stated), stated, true_share(members_of[index], stated))
    _tell_apart(names, members_of)
    return [names.get(index, SegmentName("Unassigned", (), None)) for index in range(len(members_of))]


def _core_length(claims: list[str]) -> int:
    """How many of the ranked claims a name states at first: recency, frequency and spending; being
    new only when needed to tell two names apart."""
    aspects = [key.split(":")[0] for key in claims]
    return max(position + 1 for position, aspect in enumerate(aspects) if aspect != "tenure")


def _tell_apart(names: dict[int, SegmentName], members_of: Sequence[pd.DataFrame]) -> None:
    """Segments whose names still clash when their claims ran out are told apart by one aspect
    (spending first, then recency, frequency, tenure) in which each has a claim, the most specific
    true of 70% of its members with its other claims, and those claims all differ: the claim takes
    that aspect's place in the name. Segments no aspect tells apart keep one name: they are one
    segment (:func:`tasks.model.step.fitted_labelling` gives them one id)."""
    for clashing in _clashes(names):
        for aspect in ("monetary", "recency", "frequency", "tenure"):
            told = {index: _finest_claim(names[index].claims, aspect, members_of[index]) for index in clashing}
            stated = [claims for claims in told.values() if claims is not None]
            if len(stated) < len(clashing) or len({claims_name(claims) for claims in stated}) < len(stated):
                continue
            others = {name.name for index, name in names.items() if index not in clashing}
            if others & {claims_name(claims) for claims in stated}:
                continue
            for index, claims in told.items():
                assert claims is not None
                names[index] = SegmentName(claims_name(claims), claims, true_share(members_of[index], claims))
            break
        else:  # one segment: its purity is measured on all its members
            together = pd.concat([members_of[index] for index in clashing])
            for index in clashing:
                names[index] = SegmentName(
                    names[index].name, names[index].claims, true_share(together, names[index].claims)
                )


def _clashes(names: dict[int, SegmentName]) -> list[list[int]]:
    by_name: dict[str, list[int]] = {}
    for index, name in names.items():
        by_name.setdefault(name.name, []).append(index)
    return [indexes for indexes in by_name.values() if len(indexes) > 1]


def _finest_claim(claims: tuple[str, ...], aspect: str, members: pd.DataFrame) -> tuple[str, ...] | None:
    """``claims`` with ``aspect`` stated by its narrowest claim that is true, with the others, of 70%
    of ``members``; ``None`` when none is. A grid name has no aspects."""
    if claims and claims[0].startswith(GRID):
        return None
    rest = tuple(key for key in claims if CLAIM_BY_KEY[key].aspect != aspect)
    for key in TELLING_APART[aspect]:
        stated = tuple(sorted((*rest, key), key=_aspect_order))
        if true_share(members, stated) >= TRUE_OF:
            return stated
    return None


def _aspect_order(key: str) -> int:
    return ("recency", "frequency", "monetary", "tenure").index(CLAIM_BY_KEY[key].aspect)


def persona_of(name: SegmentName, members: pd.DataFrame) -> SegmentPersona:
    """What a segment's name means and what marketing should do: the grid's persona for a grid name;
    for claims, the share of members each claim is true of, and an action by recency and frequency."""
    if name.claims and name.claims[0].startswith(GRID):
        return PERSONAS[name.name]
    facts = [f"{true_share(members, [key]):.0%} {CLAIM_BY_KEY[key].description}" for key in name.claims]
    aspects = {CLAIM_BY_KEY[key].aspect: key.split(":")[1] for key in name.claims}
    lapsed = aspects.get("recency") in ("lapsed", "lapsing")
    once = aspects.get("frequency") in ("one-time", "occasional")
    if lapsed and not once:
        action = "Win them back: personal reminders and offers on what they used to buy."
    elif lapsed:
        action = "Low-cost reactivation at most; leave them out of paid campaigns."
    elif once or aspects.get("tenure") == "new":
        action = "Onboard them: a welcome series and a reason for a second order."
    else:
        action = "Reward and upsell: loyalty programme, early access, referrals."
    if aspects.get("monetary") == "high":
        action += " They spend the most: give them priority."
    return SegmentPersona("; ".join(facts).capitalize() + ".", action)


def member_frames(scored: pd.DataFrame, labels: np.ndarray, n_clusters: int) -> list[pd.DataFrame]:
    """The scored customers with net purchases of each cluster index (``labels`` in their order)."""
    purchasers = scored.loc[scored["frequency"] > 0]
    return [purchasers.loc[labels == index] for index in range(n_clusters)]
