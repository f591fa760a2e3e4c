"""Teacher LLM judging (seed 001): an OpenAI-compatible endpoint scores answers, with a durable
cache, bounded retries, bounded concurrency and a USD budget cap. See ``client.py``; labelling
runs, reports and quality checks built on it: ``labelling.py``, ``report.py``, ``quality.py``."""
from irsflow.teacher.cache import JudgementCache, judgement_key
from irsflow.teacher.client import (Judgement, Price, TeacherConfig, TeacherReply, TeacherSettings, ajudge_items,
                                    cached_judgements, judge_items, load_template, read_usage)

__all__ = ["Judgement", "JudgementCache", "Price", "TeacherConfig", "TeacherReply", "TeacherSettings", "ajudge_items",
           "cached_judgements", "judge_items", "judgement_key", "load_template", "read_usage"]
