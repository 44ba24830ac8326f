"""A deterministic synthetic news corpus for the demo and the tests.

Four news-like classes, mostly English with some Chinese rows, a few malformed rows, and an
"order slice": rows such as "investors beat engineers in the final" whose label is the class of the
*first* actor. Both orders of every pair occur equally often, so a bag-of-words model cannot do
better than chance on that slice; a sequence model can.

Ids say which slice a row belongs to: `<date>-topic-00001`, `<date>-order-00002`.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from pipeline import lake

CLASSES = ("Business", "Sci/Tech", "Sports", "World")

_TOPIC = {
    "World": "election minister president border refugees treaty summit ceasefire embassy parliament "
    "protest sanctions capital diplomat rebels troops united nations vote coalition referendum".split(),
    "Sports": "match goal season coach striker league cup final tournament scored victory champion "
    "olympic medal stadium injury transfer playoff referee innings".split(),
    "Business": "shares profit market stocks quarterly earnings investors merger bank inflation "
    "revenue oil prices economy retail bonds dividend acquisition ceo growth".split(),
    "Sci/Tech": "software chip internet researchers space nasa computer browser startup robot "
    "genome quantum satellite smartphone algorithm data network cloud laser battery".split(),
}
_TOPIC_ZH = {
    "World": ["总统", "选举", "外交", "议会", "条约", "边境"],
    "Sports": ["足球", "比赛", "冠军", "球队", "联赛", "进球"],
    "Business": ["股市", "银行", "利润", "投资", "经济", "油价"],
    "Sci/Tech": ["科技", "芯片", "软件", "卫星", "网络", "机器人"],
}
_ACTORS = {  # one-token actors for the order slice
    "World": ["diplomats", "senators", "envoys", "ministers", "governors"],
    "Sports": ["strikers", "goalkeepers", "sprinters", "cyclists", "boxers"],
    "Business": ["bankers", "traders", "shareholders", "retailers", "lenders"],
    "Sci/Tech": ["engineers", "astronomers", "chipmakers", "programmers", "physicists"],
}
_VERBS = ["beat", "outpaced", "overtook", "edged", "defeated", "outplayed"]
_FILLER = (
    "the a of in on for with after before new report says today week year officials latest "
    "amid over under as by from reuters ap update"
).split()
_FILLER_ZH = ["的", "在", "了", "和", "新", "今天", "报道", "最新"]

TRAIN_DATES = ("2026-01-01", "2026-01-02", "2026-01-03")
SCORE_DATE = "2026-01-04"


def topic_row(rng: random.Random, label: str) -> str:
    if rng.random() < 0.2:  # a Chinese title
        words = [rng.choice(_TOPIC_ZH[label]) for _ in range(rng.randint(2, 4))]
        words += [rng.choice(_FILLER_ZH) for _ in range(rng.randint(1, 3))]
        rng.shuffle(words)
        return "".join(words)
    words = [rng.choice(_TOPIC[label]) for _ in range(rng.randint(3, 6))]
    words += [rng.choice(_FILLER) for _ in range(rng.randint(2, 8))]
    if rng.random() < 0.15:  # a distracting word from another class
        words.append(rng.choice(_TOPIC[rng.choice([c for c in CLASSES if c != label])]))
    rng.shuffle(words)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(["", ".", "!", " - report"])


def order_row(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(CLASSES, 2)
    a, b = rng.choice(_ACTORS[first]), rng.choice(_ACTORS[second])
    tail = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 3)))
    return f"{a} {rng.choice(_VERBS)} {b} {tail}".strip(), first


def generate_day(date: str, *, rows: int, labelled: bool, seed: int = 7) -> str:
    """One day's CSV (`id,text,label`), with a handful of malformed rows at the end."""
    rng = random.Random(f"{seed}-{date}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "text", "label"])
    for i in range(rows):
        if rng.random() < 0.3:
            text, label = order_row(rng)
            kind = "order"
        else:
            label = rng.choice(CLASSES)
            text, kind = topic_row(rng, label), "topic"
        w.writerow([f"{date}-{kind}-{i:05d}", text, label if labelled else ""])
    # Malformed rows, each quarantined with its own reason by ingest.
    w.writerow([f"{date}-bad-blank", "   ", "World" if labelled else ""])
    w.writerow([f"{date}-topic-00000", "a repeated id", "Sports" if labelled else ""])
    if labelled:
        w.writerow([f"{date}-bad-label", "weather turns cold across the north", "Weather"])
    buf.write(f'{date}-bad-columns,"too many",World,extra\n')
    return buf.getvalue()


def generate_corpus(data: lake.DataDir, *, rows_per_day: int = 1500, seed: int = 7) -> list[Path]:
    """Write the demo corpus into `raw/<date>/news.csv` (same seed, same bytes); its classes are `CLASSES`."""
    paths = []
    for date in (*TRAIN_DATES, SCORE_DATE):
        labelled = date != SCORE_DATE
        text = generate_day(
            date, rows=rows_per_day if labelled else rows_per_day // 2, labelled=labelled, seed=seed
        )
        path = data.raw(date) / "news.csv"
        lake.write_bytes(path, text.encode("utf-8"))
        paths.append(path)
    return paths
