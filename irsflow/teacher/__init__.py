"""Teacher LLM judging (seed 001): an OpenAI-compatible endpoint scores answers, with a durable
cache, bounded retries, bounded concurrency and a USD budget cap. See ``client.py``."""
from irsflow.teacher.cache import JudgementCache, judgement_key
from irsflow.teacher.client import (Judgement, Price, TeacherReply, TeacherSettings, ajudge_items, judge_items,
                                    load_template, read_usage)

__all__ = ["Judgement", "JudgementCache", "Price", "TeacherReply", "TeacherSettings", "ajudge_items",
           "judge_items", "judgement_key", "load_template", "read_usage"]
