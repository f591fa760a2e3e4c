"""How good is a model: a job's own evaluations, the auto-eval suites and the promotion gate's decision.

    answers.py     answers of a model (+ adapter) to a question set, and their rewards under fixed weights
    heldout.py     a job's held-out questions answered by the start model and each round's adapter
    round_eval.py  the EVALUATING phase of a round: held-out answers, the round eval, CHANGELOG.md
    suites.py      held-out rewards, multiple choice, safety (red team), dialogue metrics
    mc.py          multiple-choice sets and answer parsing
    gate.py        the gate: champion vs challenger with noise and safety margins
    card.py        the model card and changelog lines

May import: the base modules, teacher, rewards, codebook, feedback, settings, loop, training, stages,
config, labelling. Never release, jobs or Prefect.
"""
