"""Shared fixtures: a small real corpus indexed once per session with the real MiniLM embedder."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

SMALL_CORPUS = {
    "finance/etf-basics.md": ("fin-etf", "finance", "en", ["investing", "etfs"], "2025-02-10", """
        # What an ETF is
        An exchange-traded fund (ETF) holds a basket of securities and trades on a stock exchange like a share.
        Most ETFs track an index such as the S&P 500. Their expense ratios are usually below 0.2 percent a year.

        ## Rebalancing
        Rebalancing means selling assets that grew above their target weight and buying those below it.
        Many investors rebalance once a year or when an allocation drifts by more than five percentage points.
        """),
    "finance/mortgage.md": ("fin-mortgage", "finance", "en", ["mortgage", "loans"], "2024-11-01", """
        # Fixed and variable mortgages
        A fixed-rate mortgage keeps the same interest rate for the whole term, so monthly payments never change.
        A variable-rate mortgage follows a reference rate; payments rise when central banks raise rates.

        | Term | Typical fixed rate | Typical variable rate |
        |---|---|---|
        | 10 years | 5.1% | 4.6% |
        | 20 years | 5.4% | 4.8% |
        | 30 years | 5.9% | 5.0% |
        """),
    "finance/tax-zh.md": ("fin-tax-zh", "finance", "zh", ["税务"], "2025-01-05", """
        # 个人所得税专项附加扣除
        个人所得税专项附加扣除包括子女教育、继续教育、大病医疗、住房贷款利息、住房租金和赡养老人。
        子女教育扣除标准为每个子女每月二千元。住房贷款利息扣除标准为每月一千元，扣除期限最长不超过二百四十个月。
        纳税人可以在个人所得税应用程序中填报专项附加扣除信息。
        """),
    "medical/hypertension.md": ("med-hypertension", "medical", "en", ["blood pressure", "heart"], "2025-03-01", """
        # Measuring blood pressure at home
        Hypertension is diagnosed when blood pressure stays at or above 130/80 mmHg on repeated measurements.
        Measure at the same time each morning, seated, after five minutes of rest, with the cuff at heart level.
        Avoid caffeine and exercise for 30 minutes before measuring.

        ## Treatment
        Lifestyle changes come first: less salt, regular exercise, limited alcohol. Common first-line medicines
        include ACE inhibitors, calcium channel blockers and thiazide diuretics.
        """),
    "medical/hypertension-zh.md": ("med-hypertension-zh", "medical", "zh", ["高血压"], "2025-03-02", """
        # 高血压的家庭监测
        高血压患者应该每天早晨在同一时间测量血压。测量前应安静休息五分钟，袖带应与心脏保持同一水平。
        测量前三十分钟内不要喝咖啡，也不要运动。血压持续高于一百三十除以八十毫米汞柱时，应及时就医。
        """),
    "medical/vaccines.md": ("med-vaccines", "medical", "en", ["vaccines", "children"], "2024-09-15", """
        # Childhood vaccination schedule
        The measles, mumps and rubella (MMR) vaccine is given in two doses: at 12 to 15 months and at 4 to 6 years.
        Influenza vaccination is recommended every year for everyone older than six months.
        Mild fever and a sore arm are common side effects and pass within two days.
        """),
    "education/formative.md": ("edu-formative", "education", "en", ["assessment", "teaching"], "2025-04-20", """
        # Formative assessment
        Formative assessment checks understanding during learning so that teaching can adjust.
        Exit tickets, mini whiteboards and think-pair-share are quick formative techniques.
        Feedback works best when it is specific, timely and tells the student what to do next.
        """),
    "education/fractions-zh.md": ("edu-fractions-zh", "education", "zh", ["数学", "分数"], "2025-05-12", """
        # 小学数学分数教学
        分数教学应从具体的实物开始，例如把一个披萨平均分成四份，每份就是四分之一。
        学生理解分数的意义以后，再学习比较分数的大小和分数的加减法。
        使用数轴可以帮助学生理解分数也是一个数。
        """),
    "education/study-skills.md": ("edu-study", "education", "en", ["study skills", "students"], "2025-06-01", """
        # Study skills that work
        Spaced repetition spreads review sessions over days and weeks instead of cramming the night before.
        Retrieval practice, such as self-testing with flashcards, improves long-term memory more than rereading.
        Interleaving mixes different types of problems within one practice session.
        """),
}


def write_corpus(root: Path, docs: dict = SMALL_CORPUS) -> Path:
    for rel, (doc_id, domain, lang, tags, date, body) in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        title = next(line[2:] for line in textwrap.dedent(body).splitlines() if line.startswith("# "))
        front = (f"---\nid: {doc_id}\ntitle: \"{title}\"\ndomain: {domain}\nlanguage: {lang}\n"
                 f"tags: [{', '.join(tags)}]\naudience: general\ndate: {date}\nsource: test corpus\n---\n")
        path.write_text(front + textwrap.dedent(body).strip() + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """One model cache for the whole session, so converted models are converted once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def make_settings(home: Path, models_dir: Path, **over):
    from rag.config import load_settings

    return load_settings(environ={}, home=str(home), model_cache=str(models_dir), **over)


@pytest.fixture(scope="session")
def built_home(tmp_path_factory, small_corpus, models_dir):
    """A data home with the small corpus built and published once per session. Treat as read-only."""
    from indexer.build import build

    home = tmp_path_factory.mktemp("home")
    settings = make_settings(home, models_dir)
    report = build(settings, [small_corpus], show_progress=False)
    return settings, report


@pytest.fixture(scope="session")
def application(built_home):
    from rag.application import Application

    settings, _ = built_home
    return Application(settings)


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server for one test module (tests.engines), skipped where PostgreSQL is not installed."""
    from tests.engines import PostgresServer, postgres_missing

    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    server = PostgresServer().start()
    yield server
    server.stop()
