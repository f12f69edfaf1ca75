"""A small labelled retrieval set (written for this project, no external data).

- ``PASSAGES``: 30 short passages, each the answer to one question, plus ``DISTRACTORS``: 10
  passages on the same topics as some of them (hard negatives) that answer no question.
- ``QUESTIONS``: 30 questions paraphrased away from their passage's wording, each with the id of
  the one passage that answers it.
- :func:`long_chunks`: every passage (and distractor) buried at a random position inside
  ~800 tokens of neutral filler, i.e. the size of an ``auto`` chunk: tests whether a model still
  finds a fact that is a small part of a long chunk, beyond the first few hundred words.

Used by ``bench/embeddings.py`` (and reusable by an end-to-end file_search benchmark).
"""

from __future__ import annotations

import random

PASSAGES: dict[str, str] = {
    "lighthouse": "The Harwick Point lighthouse was automated in 1987; before that, three keepers "
    "lived on the island and rotated four-week shifts.",
    "espresso": "To pull a balanced espresso shot, grind the beans fine, dose about 18 grams, and "
    "aim for roughly 36 grams of liquid in 25 to 30 seconds.",
    "refund": "Customers may return unused items within 30 days of delivery for a full refund; "
    "opened software and gift cards cannot be returned.",
    "vacation": "Full-time employees accrue 1.5 vacation days per month, and up to ten unused days "
    "may be carried over into the next calendar year.",
    "sick_leave": "Sick leave does not accumulate: each employee receives eight paid sick days on "
    "January 1, and any days left on December 31 expire.",
    "revenue": "Third-quarter revenue rose 12 percent year over year to 4.2 billion dollars, driven "
    "mainly by subscription growth in Europe.",
    "debt": "The company repaid 600 million dollars of bonds maturing in 2026 and ended the quarter "
    "with net debt of 1.1 billion dollars.",
    "photosynthesis": "During photosynthesis, chloroplasts use light energy to split water "
    "molecules, releasing oxygen and storing energy in sugar.",
    "shield_volcano": "Shield volcanoes such as Mauna Loa are built from fluid basaltic lava flows, "
    "giving them broad, gently sloping sides.",
    "password_reset": "To reset your password, open Settings, choose Security, and click 'Send "
    "reset link'; the link expires after 15 minutes.",
    "two_factor": "Two-factor authentication can be enabled under Settings > Security by scanning "
    "the QR code with an authenticator app.",
    "gil": "In CPython, the global interpreter lock allows only one thread to execute Python "
    "bytecode at a time, so CPU-bound threads do not run in parallel.",
    "vacuum": "PostgreSQL's autovacuum removes dead row versions left behind by updates and "
    "deletes, and refreshes the planner's statistics.",
    "marathon": "The marathon distance was standardized at 42.195 kilometres after the 1908 London "
    "Olympics, where the course ran from Windsor Castle to the stadium.",
    "sourdough": "A sourdough starter is a mixture of flour and water colonized by wild yeast and "
    "lactic acid bacteria; kept at room temperature it should be fed daily.",
    "spring_tides": "Spring tides, with the largest range between high and low water, occur when "
    "the Sun, Moon and Earth are aligned at new and full moon.",
    "insulin": "Insulin, produced by beta cells in the pancreas, lowers blood glucose by helping "
    "muscle and fat cells absorb sugar.",
    "shipping": "Standard shipping takes 3 to 5 business days; express orders placed before 2 p.m. "
    "are delivered the next business day.",
    "warranty": "All laptops carry a two-year limited warranty covering manufacturing defects, but "
    "not accidental damage or battery wear.",
    "bees": "Honeybees tell their hive mates the direction and distance of food sources with a "
    "figure-eight waggle dance.",
    "coral": "Coral bleaching happens when water that is too warm causes corals to expel the "
    "symbiotic algae living in their tissues.",
    "rates": "The central bank raised its policy rate by 50 basis points to 4.75 percent to bring "
    "inflation back toward its 2 percent target.",
    "gdpr": "Under the GDPR, a personal data breach must be reported to the supervisory authority "
    "within 72 hours of becoming aware of it.",
    "backups": "Nightly backups are stored for 35 days, and a full snapshot is copied to a second "
    "region every Sunday.",
    "rebase": "git rebase replays the commits of a branch on top of another base commit, producing "
    "a linear history instead of a merge commit.",
    "castling": "Castling moves the king two squares toward a rook and places that rook on the "
    "square the king crossed; it is not allowed while the king is in check.",
    "everest": "Climbers on Everest spend weeks acclimatizing at base camp because the air at the "
    "summit holds only a third of the oxygen available at sea level.",
    "meeting": "The design review moved from Tuesday to Thursday at 10 a.m. in room 4B, because "
    "the projector in room 2A is broken.",
    "parking": "Visitors can park for free in lot C for up to three hours; after that the rate is "
    "four dollars per hour.",
    "solar": "Photovoltaic panels convert sunlight directly into electricity using semiconductor "
    "cells, which are usually made of silicon.",
}

DISTRACTORS: dict[str, str] = {
    "d_part_time": "Part-time employees accrue vacation at half the full-time rate and cannot "
    "carry any days over.",
    "d_q4": "Fourth-quarter revenue is expected to be flat because of weaker hardware sales in "
    "Asia.",
    "d_express": "Express shipping is not available for furniture or for deliveries to islands.",
    "d_gift_cards": "Gift cards never expire and can be used online or in any of our stores.",
    "d_tidal_power": "Tidal power stations generate electricity from the movement of water between "
    "high and low tide.",
    "d_cold_brew": "Cold brew coffee is steeped in cold water for 12 to 24 hours and tastes less "
    "acidic than hot coffee.",
    "d_room_2a": "Conference room 2A seats twelve people and has a video-conferencing system.",
    "d_glucagon": "Glucagon raises blood sugar by signalling the liver to release stored glucose.",
    "d_merge": "git merge combines two branches by creating a new commit that has two parents.",
    "d_stratovolcano": "Stratovolcanoes such as Mount Fuji are steep and conical because their "
    "viscous lava does not flow far.",
}

# (question, id of the passage that answers it)
QUESTIONS: list[tuple[str, str]] = [
    ("When did the Harwick Point lighthouse stop needing resident keepers?", "lighthouse"),
    ("How long should the extraction of a double espresso take?", "espresso"),
    ("Can I get my money back for a gift card?", "refund"),
    ("How many unused holiday days roll over to the following year?", "vacation"),
    ("What happens to sick days that were not used by the end of the year?", "sick_leave"),
    ("What drove the increase in Q3 sales?", "revenue"),
    ("How much borrowing did the firm pay back this quarter?", "debt"),
    ("Where does the oxygen that plants give off come from?", "photosynthesis"),
    ("Why do some volcanoes have wide, gentle slopes?", "shield_volcano"),
    ("How long is the password recovery email valid?", "password_reset"),
    ("How do I turn on login verification with an authenticator app?", "two_factor"),
    ("Why doesn't multithreaded number crunching in Python speed up on several cores?", "gil"),
    ("What cleans up obsolete tuples in Postgres?", "vacuum"),
    ("Why is the marathon exactly 42.195 km long?", "marathon"),
    ("How often should I feed my bread culture if it stays on the kitchen counter?", "sourdough"),
    ("When is the difference between high and low tide the greatest?", "spring_tides"),
    ("Which organ makes the hormone that reduces blood sugar?", "insulin"),
    ("If I place an express order at noon, when will it arrive?", "shipping"),
    ("Is a cracked screen from dropping my notebook computer covered?", "warranty"),
    ("How do bees let each other know where the flowers are?", "bees"),
    ("What makes reefs turn white?", "coral"),
    ("By how much did the interest rate go up?", "rates"),
    ("What is the deadline for notifying regulators about a data leak in the EU?", "gdpr"),
    ("How long are the daily backups kept?", "backups"),
    ("How can I avoid merge commits and keep the history straight?", "rebase"),
    ("Can you castle to get out of check?", "castling"),
    ("Why do mountaineers wait so long before going for the top?", "everest"),
    ("Where and when is the design review now?", "meeting"),
    ("What does parking cost after the first three hours?", "parking"),
    ("What material are most solar cells made from?", "solar"),
]

FILLER: list[str] = [
    "This page is part of the general reference notes kept by the team.",
    "Formatting and numbering follow the house style guide adopted last spring.",
    "Earlier drafts of this material were circulated for comment among the editors.",
    "Where a section refers to another document, the reference is given in brackets.",
    "The notes are reviewed once a year and minor corrections are made without notice.",
    "Readers are encouraged to report typographical errors to the maintainers.",
    "Some paragraphs were shortened for readability in this edition.",
    "Headings were renumbered after two sections were merged.",
    "The original text was written by several contributors over a number of years.",
    "No part of this overview should be read as a formal commitment.",
    "Abbreviations are spelled out the first time they appear in each chapter.",
    "Tables in the appendix summarise material that is explained in the main text.",
    "An index of terms is provided at the end of the collection.",
    "Cross-references use the section numbers of the current edition.",
    "Page layout was adjusted so that figures stay close to the text that cites them.",
    "The collection is organised by subject rather than by date of writing.",
    "Each chapter begins with a short summary of what follows.",
    "Footnotes give sources and occasional remarks of the editors.",
    "Quotations have been checked against the originals where possible.",
    "The glossary lists terms whose meaning differs from everyday usage.",
    "A revision history is kept separately and is available on request.",
    "Comments received after the deadline will be considered for the next edition.",
    "Illustrations are reproduced with the permission of their owners.",
    "The structure of this edition mirrors that of the previous one.",
    "Bulleted lists are used for steps that must be followed in order.",
    "Minor inconsistencies in spelling have been corrected throughout.",
    "Material that is no longer current has been moved to an archive section.",
    "The editors thank everyone who contributed suggestions.",
    "Section lengths vary because some topics need more background than others.",
    "Older material is marked as such at the top of the page.",
    "Dates are given in the international format throughout the text.",
    "The table of contents lists every chapter and its first page.",
    "Examples are kept short and are labelled as examples.",
    "Where figures are approximate, this is stated in the text.",
    "The notes do not assume any prior knowledge of the subject.",
    "A printable version of this collection is produced every quarter.",
    "The layout of the printed and online versions is the same.",
    "Blank pages at the end of chapters are intentional.",
    "Chapter titles were chosen to be short and descriptive.",
    "Questions about this collection can be sent to the editorial office.",
]


def all_passages() -> dict[str, str]:
    return {**PASSAGES, **DISTRACTORS}


def long_chunks(target_tokens: int = 800, seed: int = 7, count_tokens=None) -> dict[str, str]:
    """Each passage inside ``target_tokens`` of filler, at a random position past the first
    quarter of the chunk (seeded, reproducible). ``count_tokens`` measures size (default: words
    x 1.3)."""
    count = count_tokens or (lambda s: int(len(s.split()) * 1.3))
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for pid, passage in all_passages().items():
        sentences: list[str] = []
        while count(" ".join(sentences)) + count(passage) < target_tokens:
            sentences.append(rng.choice(FILLER))
        lo = max(1, len(sentences) // 4)
        position = rng.randint(lo, len(sentences))
        sentences.insert(position, passage)
        out[pid] = " ".join(sentences)
    return out
